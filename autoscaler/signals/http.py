"""The one place the autoscaler's scrapers call httpx, and translate its errors.

Where it sits: under the gateway, Triton, DCGM and Prometheus readers, off the data path
(httpx is fine here: a scrape a second per source). Every transport or HTTP status failure
becomes :class:`~autoscaler.errors.ScrapeError` naming the URL, chained to the original.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from autoscaler.errors import ScrapeError


@contextmanager
def http_errors(source: str) -> Iterator[None]:
    """Translate httpx errors, most specific first."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ScrapeError(source, f"timed out ({type(exc).__name__})") from exc
    except httpx.HTTPStatusError as exc:
        raise ScrapeError(source, f"HTTP {exc.response.status_code}") from exc
    except httpx.TransportError as exc:
        raise ScrapeError(source, f"unreachable: {exc or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise ScrapeError(source, str(exc) or type(exc).__name__) from exc


async def get_text(client: httpx.AsyncClient, url: str, timeout_s: float) -> str:
    with http_errors(url):
        response = await client.get(url, timeout=timeout_s)
        response.raise_for_status()
        return response.text


async def get_json(client: httpx.AsyncClient, url: str, timeout_s: float,
                   params: dict[str, str] | None = None) -> Any:
    with http_errors(url):
        response = await client.get(url, timeout=timeout_s, params=params)
        response.raise_for_status()
    try:
        return response.json()
    except ValueError as exc:
        raise ScrapeError(url, "answered with something that is not JSON") from exc


def metrics_url(address: str) -> str:
    """``host:port`` or a base URL -> its ``/metrics`` URL."""
    base = address if "://" in address else f"http://{address}"
    return base if base.rstrip("/").endswith("/metrics") else base.rstrip("/") + "/metrics"
