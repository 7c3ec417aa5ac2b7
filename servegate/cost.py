"""``servegate cost``: the cost report of a running gateway, as a table.

Where it sits: off the request path, a client of the admin API. It fetches
``GET /admin/cost?window=<since>`` with the admin token and prints one row per
(pool, model, tenant), or the rows summed by pool, model or tenant (``--by``)::

    POOL   MODEL       TENANT      REQUESTS  GPU-HOURS  DOLLARS  $/1K INF  GPU-S/1K  IDLE
    cpu    classifier  acme           1,204     0.2701   0.6753   0.56088    807.68  91.2%
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from router.cost import group_rows

_COLUMNS = ("REQUESTS", "GPU-HOURS", "DOLLARS", "$/1K INF", "GPU-S/1K", "IDLE")


def fetch_report(url: str, since: str, token: str | None, timeout_s: float = 10.0
                 ) -> dict[str, Any]:
    """The report's JSON; raises SystemExit with the gateway's error message."""
    query = urllib.parse.urlencode({"window": since})
    request = urllib.request.Request(url.rstrip("/") + "/admin/cost?" + query)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            doc: dict[str, Any] = json.load(response)
            return doc
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{url}: HTTP {exc.code}: {_error_text(exc.read())}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SystemExit(f"{url}: cannot fetch the cost report: {exc}") from None


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200]


def render(report: Mapping[str, Any], by: str | None) -> str:
    rows: Sequence[Mapping[str, Any]] = report.get("rows", [])
    labels = ("pool", "model", "tenant") if by is None else (by,)
    if by is not None:
        rows = group_rows(rows, by)
    table = [[label.upper() for label in labels] + list(_COLUMNS)]
    for r in rows:
        table.append([str(r[label]) for label in labels] + _cells(r))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [c.ljust(w) if i < len(labels) else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    head = (f"cost over the last {report.get('window')} "
            f"({float(report.get('accounted_s', 0.0)):.0f}s accounted)")
    if not rows:
        return head + "\n(no cost recorded in this window)"
    return head + "\n" + "\n".join(lines)


def _cells(r: Mapping[str, Any]) -> list[str]:
    return [f"{int(r['requests']):,}", f"{float(r['gpu_hours']):.4f}",
            f"{float(r['dollars']):.4f}", _maybe(r.get("dollars_per_1k"), ".5f"),
            _maybe(r.get("gpu_seconds_per_1k"), ".2f"), _maybe(r.get("idle_share"), ".1%")]


def _maybe(value: Any, fmt: str) -> str:
    return "-" if value is None else format(float(value), fmt)


def run_cost(url: str, since: str, by: str | None, token: str | None, as_json: bool,
             out: TextIO | None = None) -> int:
    out = out or sys.stdout
    report = fetch_report(url, since, token)
    if as_json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(render(report, by) + "\n")
    return 0
