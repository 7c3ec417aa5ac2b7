"""Errors raised by the pure routing layer.

    RouterError
     └── RouteError
          ├── UnknownModel  no route for the model (and version) a client asked for
          └── NoEndpoint    the model's pool has no available endpoint right now

The gateway maps these to HTTP / gRPC status codes in one place (gateway/http/errors.py).
"""

from __future__ import annotations


class RouterError(Exception):
    """Base of every error raised by :mod:`router`."""


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
