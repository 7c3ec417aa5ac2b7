"""Reading the one YAML config file, for both processes.

Where it sits: at start-up of ``servegate gateway`` (and on each of its reloads,
``gateway.config.Reloader``), ``servegate autoscaler`` and ``servegate check-config``. Validation
lives in :mod:`contracts.config`; this module only does the I/O and turns an unreadable file
or YAML syntax errors into the same :class:`contracts.ConfigError`, with a line number.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from contracts import Config, ConfigError, parse_config


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
