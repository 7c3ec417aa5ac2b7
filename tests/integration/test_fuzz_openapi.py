"""Schemathesis against the REST front door: no 5xx of the gateway's own making.

The gateway serves its OpenAPI document at ``/openapi.json``; schemathesis (4.x) turns each
operation into a Hypothesis strategy (``APIOperation.as_strategy``, valid and invalid requests:
path parameters, headers such as ``Inference-Header-Content-Length``, infer bodies), and a
bounded, derandomized run sends about 1,000 of them to a real gateway in front of real Triton.
Model-scoped operations get either a generated model name or one the pool serves, so most of
those cases reach Triton. Arrays, objects and strings in bodies are capped (test-only) to keep
generation cheap; large bodies are covered by test_bad_input.py.

Triton itself answers 500 to some bad bodies (unparsable JSON, a missing ``inputs``, errors
raised in a Python model), and the gateway passes an upstream answer through unchanged. So a
5xx is the gateway's own only if the same request sent straight to a Triton endpoint of the
pool does not get the same status: each 5xx is replayed there. Afterwards every Triton endpoint
must still be live and the gateway must still serve inference: an input that takes a Triton
server down is a failure too (the first run found one; see gateway/http/validate.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from servegate.local.launch import TritonProcess
from tests.harness import GatewayProcess, http_get

pytestmark = pytest.mark.integration

CASES = 1000
MODELS = ("classifier", "identity", "embedder")
_TIMEOUT_S = 10.0
_CAPS = {"array": ("maxItems", 4), "object": ("maxProperties", 4), "string": ("maxLength", 32)}


def _capped(node: Any) -> Any:
    """The schema with a size cap on every array, object and string that has none."""
    if isinstance(node, list):
        return [_capped(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _capped(v) for k, v in node.items()}
    cap = _CAPS.get(out.get("type")) if isinstance(out.get("type"), str) else None
    if cap is not None:
        out.setdefault(*cap)
    return out


def _model_names(path: str) -> list[dict[str, str]]:
    """Fixed ``{model}`` values for an operation: none (generated), or each pool model."""
    if "{model}" not in path:
        return [{}]
    return [{}, *({"model": m} for m in MODELS)]


def _replayed_status(case: Any, base_url: str, session: requests.Session) -> int | str:
    """The status Triton answers to the same request (or why it did not answer)."""
    try:
        return int(case.call(base_url=base_url, session=session, timeout=_TIMEOUT_S).status_code)
    except requests.RequestException as exc:
        return f"no answer: {type(exc).__name__}"


def test_no_gateway_5xx_for_generated_requests(gateway: GatewayProcess,
                                               triton_pool: list[TritonProcess]) -> None:
    session = requests.Session()
    served = session.get(gateway.url + "/openapi.json", timeout=_TIMEOUT_S)
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    doc = served.json()
    doc["components"]["schemas"] = _capped(doc["components"]["schemas"])
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16, [op.label for op in operations]
    strategy = st.one_of(*(op.as_strategy(mode, path_parameters=fixed)
                           for op in operations for fixed in _model_names(op.path)
                           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))
    direct = f"http://{triton_pool[0].http}"
    statuses: Counter[int] = Counter()
    labels: Counter[str] = Counter()
    gateway_5xx: list[str] = []

    @settings(max_examples=CASES, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def send(case: Any) -> None:
        response = case.call(base_url=gateway.url, session=session, timeout=_TIMEOUT_S)
        statuses[response.status_code] += 1
        labels[case.operation.label] += 1
        if response.status_code < 500:
            return
        replayed = _replayed_status(case, direct, session)
        if replayed != response.status_code:
            gateway_5xx.append(
                f"{case.operation.label}: gateway {response.status_code} "
                f"{response.text[:200]!r}, Triton directly: {replayed}\n"
                f"  {case.as_curl_command()[:600]}")

    send()
    print(f"statuses: {dict(statuses)}; cases per operation: {dict(labels)}")
    assert not gateway_5xx, "\n".join(gateway_5xx[:10])
    assert sum(statuses.values()) >= CASES * 0.9, statuses
    assert len(labels) == len(operations), labels  # every operation was exercised
    assert statuses[200] > 0 and any(400 <= s < 500 for s in statuses), statuses
    # nothing broke: every Triton endpoint is live and the gateway still serves inference
    for triton in triton_pool:
        assert http_get(f"http://{triton.http}/v2/health/live")[0] == 200, triton.http
    body = b'{"inputs":[{"name":"DATA","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    ok = session.post(gateway.url + "/v2/models/identity/infer", data=body, timeout=_TIMEOUT_S)
    assert ok.status_code == 200, ok.text
