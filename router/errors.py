"""Errors raised by the pure routing layer.

    RouterError
     ├── ConfigError        the YAML config is invalid (every problem, each with its key path)
     └── RouteError
          ├── UnknownModel  no route for the model (and version) a client asked for
          └── NoEndpoint    the model's pool has no available endpoint right now

The gateway maps these to HTTP / gRPC status codes in one place (gateway/http/errors.py).
"""

from __future__ import annotations

from collections.abc import Sequence


class RouterError(Exception):
    """Base of every error raised by :mod:`router`."""


class ConfigError(RouterError):
    """A config failed validation; ``problems`` lists ``"<source>: <key.path>: <what>"``."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = [f"{source}: {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("invalid config:\n  " + "\n  ".join(self.problems))


class RouteError(RouterError):
    """A request cannot be routed."""


class UnknownModel(RouteError):
    def __init__(self, model: str, version: str = "") -> None:
        self.model = model
        self.version = version
        what = f"'{model}' version {version}" if version else f"'{model}'"
        super().__init__(f"Request for unknown model: {what} is not routed by this gateway")


class NoEndpoint(RouteError):
    def __init__(self, pool: str) -> None:
        self.pool = pool
        super().__init__(f"no healthy endpoint in pool '{pool}'")
