"""Reading the YAML config file, and reloading it without dropping requests.

Where it sits: at start-up (:func:`load_config_file`) and on SIGHUP or a file change
(:class:`Reloader`). Validation lives in :mod:`contracts.config`; this module only does the I/O
and turns YAML syntax errors into the same :class:`router.ConfigError` with a line number.
A config that fails to load is logged and the running one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from contracts import Config, ConfigError, parse_config

log = logging.getLogger("servegate.config")


def load_config_file(path: str | Path) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read file: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [("", f"not UTF-8 text (byte {exc.start})")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(where, f"invalid YAML: {problem}")]) from exc
    return parse_config(data, source)


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
