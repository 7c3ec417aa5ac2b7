"""Reloading the YAML config file without dropping requests.

Where it sits: on SIGHUP or a file change (:class:`Reloader`); the file is read by
:func:`adapters.configfile.load_config_file`, as at start-up. A config that fails to load is
logged and the running one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from adapters.configfile import load_config_file
from contracts import Config, ConfigError

log = logging.getLogger("servegate.config")


class Reloader:
    """Reload ``path`` on demand or when it changes; ``apply`` only ever sees a valid config."""

    def __init__(self, path: str | Path, apply: Callable[[Config], object],
                 on_result: Callable[[bool], None] = lambda ok: None) -> None:
        self.path = Path(path)
        self._apply = apply
        self._on_result = on_result
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> bool:
        self._stamp = self._file_stamp()
        try:
            config = load_config_file(self.path)
            self._apply(config)  # may refuse too (e.g. unreadable API keys), before any change
        except ConfigError as exc:
            log.error("config reload rejected, the previous config keeps serving:\n%s", exc)
            self._on_result(False)
            return False
        self._on_result(True)
        return True

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the file's (mtime, size, inode) and reload when it changes."""
        while True:
            await asyncio.sleep(interval_s)
            if self._file_stamp() != self._stamp:
                self.reload()
