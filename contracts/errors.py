"""Errors raised by the contracts, one tree.

    ContractError
     └── ConfigError        the YAML config is invalid (every problem, each with its key path)

Where it sits: raised while the config is parsed (``contracts.config.parse_config``), by both
processes at start-up and on reload; the gateway keeps its old config on a reload that fails.
"""

from __future__ import annotations

from collections.abc import Sequence


class ContractError(Exception):
    """Base of every error raised by :mod:`contracts`."""


class ConfigError(ContractError):
    """A config failed validation; ``problems`` lists ``"<source>: <key.path>: <what>"``."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = [f"{source}: {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("invalid config:\n  " + "\n  ".join(self.problems))
