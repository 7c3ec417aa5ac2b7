"""contracts.config.parse_config, adapters.configfile.load_config_file and
gateway.config.Reloader."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.configfile import load_config_file
from contracts import Config, ConfigError, parse_config, split_hostport
from gateway.config import Reloader

SRC = "cfg.yaml"


def minimal() -> dict[str, Any]:
    return {
        "pools": {"cpu": {"endpoints": ["127.0.0.1:8000"]}},
        "models": {"m": {"pool": "cpu"}},
    }


def problems_of(data: object, source: str = SRC) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source)
    err = info.value
    assert err.source == source
    assert err.problems, "a ConfigError must list at least one problem"
    for p in err.problems:
        assert p.startswith(f"{source}: "), p
        assert p in str(err)
    return err.problems


# --------------------------------------------------------------------------------------------
# valid configs
# --------------------------------------------------------------------------------------------

FULL_YAML = """
pools:
  cpu:
    endpoints:
      - "127.0.0.1:8000"
      - {http: "10.0.0.7:8000", grpc: "10.0.0.7:8001", metrics: "10.0.0.7:8002"}
      - "[::1]:9000"
      - "triton-0.triton.default.svc:8000"
    timeouts: {connect_s: 0.5, read_s: 30}
    health: {probe_interval_s: 2, probe_timeout_s: 0.5, eject_after_failures: 5, min_eject_s: 0}
  gpu:
    endpoints: ["gpu-0:8000"]
models:
  classifier:
    pool: cpu
    versions: {"2": {pool: gpu}, "10": {pool: cpu}}
    timeouts: {read_s: 5}
    max_body_bytes: 1024
  my_model-v1.onnx:
    pool: gpu
limits: {max_body_bytes: 4096}
"""


def test_full_valid_config() -> None:
    cfg = parse_config(yaml.safe_load(FULL_YAML), SRC)
    assert isinstance(cfg, Config)
    cpu = cfg.pools["cpu"]
    assert [e.http for e in cpu.endpoints] == [
        "127.0.0.1:8000", "10.0.0.7:8000", "[::1]:9000", "triton-0.triton.default.svc:8000",
    ]
    # shorthand strings become {http: ...} with no grpc / metrics
    assert cpu.endpoints[0].grpc is None and cpu.endpoints[0].metrics is None
    assert cpu.endpoints[1].grpc == "10.0.0.7:8001"
    assert cpu.endpoints[1].metrics == "10.0.0.7:8002"
    assert (cpu.timeouts.connect_s, cpu.timeouts.read_s) == (0.5, 30.0)
    assert cpu.health.eject_after_failures == 5
    assert cpu.health.min_eject_s == 0
    gpu = cfg.pools["gpu"]
    assert (gpu.timeouts.connect_s, gpu.timeouts.read_s) == (1.0, 60.0)  # defaults
    assert gpu.health.eject_after_failures == 3
    model = cfg.models["classifier"]
    assert model.pool == "cpu"
    assert {v: r.pool for v, r in model.versions.items()} == {"2": "gpu", "10": "cpu"}
    assert model.timeouts.read_s == 5 and model.timeouts.connect_s is None
    assert model.max_body_bytes == 1024
    assert cfg.models["my_model-v1.onnx"].max_body_bytes is None
    assert cfg.limits.max_body_bytes == 4096


def test_defaults_of_minimal_config() -> None:
    cfg = parse_config(minimal())
    assert cfg.limits.max_body_bytes == 64 * 1024 * 1024
    assert cfg.models["m"].versions == {}
    assert cfg.pools["cpu"].health.probe_interval_s == 2.0


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"pools": {}, "models": {}}, id="empty-pools-and-models"),
        pytest.param({"pools": {"p": {}}, "models": {"m": {"pool": "p"}}}, id="pool-no-endpoints"),
        pytest.param(
            {"pools": {"p": {"endpoints": [{"http": "h:1"}]}}, "models": {}}, id="dict-endpoint"
        ),
        pytest.param(
            {"pools": {"p": {"endpoints": ["h:65535", "h:1"]}}, "models": {}}, id="port-bounds"
        ),
        pytest.param(
            {"pools": {"a": {}, "b": {}},
             "models": {"m": {"pool": "a", "versions": {"1": {"pool": "b"}}}}},
            id="version-route",
        ),
        pytest.param(
            {"pools": {"a": {}}, "models": {"m": {"pool": "a", "timeouts": {"connect_s": 2}}}},
            id="partial-timeout-override",
        ),
    ],
)
def test_valid_configs(data: dict[str, Any]) -> None:
    before = copy.deepcopy(data)
    parse_config(data)
    assert data == before  # the input document is not mutated


def test_config_is_immutable() -> None:
    cfg = parse_config(minimal())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        cfg.pools["cpu"].timeouts.read_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:8001", ("::1", 8001)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
        ("a-b_c.d:80", ("a-b_c.d", 80)),
    ],
)
def test_split_hostport(value: str, expected: tuple[str, int]) -> None:
    assert split_hostport(value) == expected


@pytest.mark.parametrize(
    "value",
    ["h", "h:", ":80", "h:0", "h:65536", "h:123456", "http://h:80", "h:80/x", "h :80", "::1:80",
     "h:-1", "h:8o", ""],
)
def test_split_hostport_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_hostport(value)


# --------------------------------------------------------------------------------------------
# invalid configs: every problem names the source, the key path and the problem
# --------------------------------------------------------------------------------------------


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


INVALID = [
    # (id, edit, expected key path, fragment of the message)
    ("unknown-pool", _set("models/m/pool", "x"), "models.m.pool", "unknown pool 'x'"),
    (
        "unknown-version-pool",
        _set("models/m/versions", {"2": {"pool": "gpu"}}),
        "models.m.versions.2.pool",
        "unknown pool 'gpu'",
    ),
    ("bad-hostport", _set("pools/cpu/endpoints", ["nope"]), "pools.cpu.endpoints.0.http",
     "expected 'host:port', got 'nope'"),
    ("port-zero", _set("pools/cpu/endpoints", ["h:0"]), "pools.cpu.endpoints.0.http",
     "expected 'host:port', got 'h:0'"),
    ("port-too-big", _set("pools/cpu/endpoints", ["h:1", "h:70000"]),
     "pools.cpu.endpoints.1.http", "expected 'host:port'"),
    ("bad-grpc", _set("pools/cpu/endpoints", [{"http": "h:1", "grpc": "h"}]),
     "pools.cpu.endpoints.0.grpc", "expected 'host:port', got 'h'"),
    ("bad-metrics", _set("pools/cpu/endpoints", [{"http": "h:1", "metrics": "h:x"}]),
     "pools.cpu.endpoints.0.metrics", "expected 'host:port'"),
    ("endpoint-missing-http", _set("pools/cpu/endpoints", [{"grpc": "h:1"}]),
     "pools.cpu.endpoints.0.http", "Field required"),
    ("endpoint-not-str-or-dict", _set("pools/cpu/endpoints", [5]), "pools.cpu.endpoints.0",
     "valid dictionary"),
    ("duplicate-endpoints", _set("pools/cpu/endpoints", ["h:1", "g:2", "h:1", {"http": "g:2"}]),
     "pools.cpu.endpoints", "duplicate endpoint(s): g:2, h:1"),
    ("negative-connect", _set("pools/cpu/timeouts", {"connect_s": -1}),
     "pools.cpu.timeouts.connect_s", "greater than 0"),
    ("zero-read", _set("pools/cpu/timeouts", {"read_s": 0}), "pools.cpu.timeouts.read_s",
     "greater than 0"),
    ("negative-model-read", _set("models/m/timeouts", {"read_s": -5}), "models.m.timeouts.read_s",
     "greater than 0"),
    ("non-numeric-timeout", _set("pools/cpu/timeouts", {"read_s": "soon"}),
     "pools.cpu.timeouts.read_s", "valid number"),
    ("zero-eject-after", _set("pools/cpu/health", {"eject_after_failures": 0}),
     "pools.cpu.health.eject_after_failures", "greater than or equal to 1"),
    ("negative-min-eject", _set("pools/cpu/health", {"min_eject_s": -0.1}),
     "pools.cpu.health.min_eject_s", "greater than or equal to 0"),
    ("zero-probe-interval", _set("pools/cpu/health", {"probe_interval_s": 0}),
     "pools.cpu.health.probe_interval_s", "greater than 0"),
    ("zero-model-body-limit", _set("models/m/max_body_bytes", 0), "models.m.max_body_bytes",
     "greater than 0"),
    ("negative-limit", _set("limits/max_body_bytes", -1), "limits.max_body_bytes",
     "greater than 0"),
    ("extra-top-level", _set("extra", 1), "extra", "Extra inputs are not permitted"),
    ("extra-pool-key", _set("pools/cpu/bogus", 1), "pools.cpu.bogus",
     "Extra inputs are not permitted"),
    ("extra-endpoint-key", _set("pools/cpu/endpoints", [{"http": "h:1", "port": 2}]),
     "pools.cpu.endpoints.0.port", "Extra inputs are not permitted"),
    ("extra-model-key", _set("models/m/replicas", 2), "models.m.replicas",
     "Extra inputs are not permitted"),
    ("extra-timeout-key", _set("models/m/timeouts", {"write_s": 1}), "models.m.timeouts.write_s",
     "Extra inputs are not permitted"),
    ("extra-version-key", _set("models/m/versions", {"1": {"pool": "cpu", "weight": 1}}),
     "models.m.versions.1.weight", "Extra inputs are not permitted"),
    ("model-missing-pool", _set("models/m", {}), "models.m.pool", "Field required"),
    ("bad-model-name-space", _set("models/bad name", {"pool": "cpu"}), "models",
     "model names may only use letters, digits"),
    ("bad-model-name-slash", lambda d: d["models"].update({"a/b": {"pool": "cpu"}}), "models",
     "'a/b'"),
    ("empty-model-name", _set("models/", {"pool": "cpu"}), "models", "model names"),
    ("non-integer-version", _set("models/m/versions", {"v2": {"pool": "cpu"}}),
     "models.m.versions", "versions must be positive integers, got ['v2']"),
    ("negative-version", _set("models/m/versions", {"-1": {"pool": "cpu"}}),
     "models.m.versions", "versions must be positive integers"),
    ("empty-version", _set("models/m/versions", {"": {"pool": "cpu"}}),
     "models.m.versions", "versions must be positive integers"),
    # "0" is not a positive integer, and "²".isdigit() is true but int("²") raises.
    ("zero-version", _set("models/m/versions", {"0": {"pool": "cpu"}}),
     "models.m.versions", "versions must be positive integers"),
    ("superscript-version", _set("models/m/versions", {"²": {"pool": "cpu"}}),
     "models.m.versions", "versions must be positive integers"),
    ("pools-not-mapping", _set("pools", ["cpu"]), "pools", "valid dictionary"),
    ("endpoints-not-list", _set("pools/cpu/endpoints", "h:1"), "pools.cpu.endpoints",
     "valid list"),
]


@pytest.mark.parametrize(
    ("edit", "path", "fragment"), [pytest.param(*row[1:], id=row[0]) for row in INVALID]
)
def test_invalid_config_names_source_path_and_problem(
    edit: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    doc = minimal()
    edit(doc)
    problems = problems_of(doc)
    prefix = f"{SRC}: {path}: "
    matching = [p for p in problems if p.startswith(prefix)]
    assert matching, f"no problem at {path!r} in {problems}"
    assert any(fragment in p for p in matching), (fragment, matching)


def test_unknown_pool_problem_text_is_exact() -> None:
    doc = minimal()
    doc["models"]["m"]["pool"] = "x"
    assert problems_of(doc) == [f"{SRC}: models.m.pool: unknown pool 'x'"]


def test_every_cross_check_problem_is_listed() -> None:
    doc = minimal()
    doc["models"] = {
        "a": {"pool": "x"},
        "b": {"pool": "cpu", "versions": {"1": {"pool": "y"}, "2": {"pool": "cpu"}}},
    }
    assert problems_of(doc) == [
        f"{SRC}: models.a.pool: unknown pool 'x'",
        f"{SRC}: models.b.versions.1.pool: unknown pool 'y'",
    ]


def test_every_schema_problem_is_listed() -> None:
    doc = minimal()
    doc["pools"]["cpu"] = {"endpoints": ["bad", "h:1"], "timeouts": {"read_s": -1}, "x": 1}
    doc["limits"] = {"max_body_bytes": 0}
    paths = {p.split(": ")[1] for p in problems_of(doc)}
    assert paths >= {
        "pools.cpu.endpoints.0.http", "pools.cpu.timeouts.read_s", "pools.cpu.x",
        "limits.max_body_bytes",
    }


@pytest.mark.parametrize(
    "data", [None, [], ["pools"], "pools: {}", 42, True],
    ids=["none", "empty-list", "list", "string", "int", "bool"],
)
def test_non_mapping_document(data: object) -> None:
    assert problems_of(data) == [f"{SRC}: <root>: expected a mapping with 'pools' and 'models'"]


@pytest.mark.parametrize("missing", ["pools", "models"])
def test_missing_top_level_key(missing: str) -> None:
    doc = minimal()
    del doc[missing]
    assert problems_of(doc) == [f"{SRC}: {missing}: Field required"]


def test_default_source_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({})
    assert info.value.source == "<config>"
    assert all(p.startswith("<config>: ") for p in info.value.problems)


def test_yaml_integer_version_keys_are_accepted() -> None:
    # ``versions: {2: {pool: gpu}}`` is the natural YAML spelling; YAML makes the key an int.
    doc = yaml.safe_load(
        "pools: {cpu: {}, gpu: {}}\n"
        "models:\n"
        "  m:\n"
        "    pool: cpu\n"
        "    versions:\n"
        "      2: {pool: gpu}\n"
    )
    assert doc["models"]["m"]["versions"] == {2: {"pool": "gpu"}}
    cfg = parse_config(doc, SRC)
    assert cfg.models["m"].versions["2"].pool == "gpu"


# --------------------------------------------------------------------------------------------
# adapters.configfile.load_config_file
# --------------------------------------------------------------------------------------------

VALID_YAML = """\
pools:
  cpu:
    endpoints: ["127.0.0.1:8000"]
models:
  m: {pool: cpu}
"""

OTHER_VALID_YAML = """\
pools:
  cpu:
    endpoints: ["127.0.0.1:8000", "127.0.0.1:8010"]
  gpu:
    endpoints: ["127.0.0.1:9000"]
models:
  m: {pool: cpu}
  n: {pool: gpu}
"""


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_load_valid_file(tmp_path: Path) -> None:
    cfg = load_config_file(write(tmp_path / "c.yaml", VALID_YAML))
    assert list(cfg.models) == ["m"]
    assert cfg.pools["cpu"].endpoints[0].http == "127.0.0.1:8000"


def test_load_accepts_str_path(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", VALID_YAML)
    assert load_config_file(str(path)) == load_config_file(path)


def test_load_validation_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", VALID_YAML.replace("pool: cpu", "pool: nope"))
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.problems == [f"{path}: models.m.pool: unknown pool 'nope'"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("pools:\n  cpu: {}\nmodels: [unclosed\n", 4),
        ("pools: {}\nmodels:\n  m: {pool: cpu\n  n: 1\n", 4),
        ("pools: {}\nmodels: {}\n\t- tab\n", 3),
        ("a: 1\n---\nb: 2\n", 2),
    ],
    ids=["unclosed-flow-seq", "unclosed-flow-map", "tab", "two-documents"],
)
def test_load_yaml_syntax_error_reports_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: line {line}, column "), problem
    assert "invalid YAML: " in problem


def test_load_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.problems == [f"{path}: <root>: expected a mapping with 'pools' and 'models'"]


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.problems == [f"{path}: <root>: cannot read file: No such file or directory"]


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{tmp_path}: <root>: cannot read file: "), problem


def test_load_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    # A Latin-1 byte in a comment: UnicodeDecodeError is a ValueError, not an OSError.
    path = write(tmp_path / "c.yaml", VALID_YAML.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: "), problem


# --------------------------------------------------------------------------------------------
# gateway.config.Reloader
# --------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.applied: list[Config] = []
        self.results: list[bool] = []

    def apply(self, cfg: Config) -> None:
        self.applied.append(cfg)

    def on_result(self, ok: bool) -> None:
        self.results.append(ok)


def test_reload_valid_change_applies(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", VALID_YAML)
    rec = Recorder()
    reloader = Reloader(path, rec.apply, rec.on_result)
    assert rec.applied == [] and rec.results == []  # constructing does not load
    write(path, OTHER_VALID_YAML)
    assert reloader.reload() is True
    assert rec.results == [True]
    (cfg,) = rec.applied
    assert sorted(cfg.models) == ["m", "n"]
    assert len(cfg.pools["cpu"].endpoints) == 2


@pytest.mark.parametrize(
    "bad",
    [
        VALID_YAML.replace("pool: cpu", "pool: nope"),  # schema problem
        "pools: [\n",  # YAML syntax error
        None,  # file removed
    ],
    ids=["invalid-schema", "invalid-yaml", "file-removed"],
)
def test_reload_invalid_change_keeps_old_config(tmp_path: Path, bad: str | None) -> None:
    path = write(tmp_path / "c.yaml", VALID_YAML)
    rec = Recorder()
    reloader = Reloader(path, rec.apply, rec.on_result)
    assert reloader.reload() is True
    if bad is None:
        path.unlink()
    else:
        write(path, bad)
    assert reloader.reload() is False
    assert rec.results == [True, False]
    assert len(rec.applied) == 1  # apply never saw the invalid config
    # and a later valid file is applied again
    write(path, OTHER_VALID_YAML)
    assert reloader.reload() is True
    assert rec.results == [True, False, True]
    assert sorted(rec.applied[-1].models) == ["m", "n"]


def test_reload_invalid_utf8_reports_failure(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", VALID_YAML)
    rec = Recorder()
    reloader = Reloader(path, rec.apply, rec.on_result)
    write(path, VALID_YAML.encode() + b"# caf\xe9\n")
    assert reloader.reload() is False
    assert rec.results == [False]
    assert rec.applied == []


def test_reloader_default_on_result(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "pools: [\n")
    applied: list[Config] = []
    assert Reloader(path, applied.append).reload() is False
    assert applied == []


async def _wait_until(pred: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


async def test_watch_reloads_on_change(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", VALID_YAML)
    rec = Recorder()
    reloader = Reloader(path, rec.apply, rec.on_result)
    task = asyncio.create_task(reloader.watch(interval_s=0.01))
    try:
        # an unchanged file is not reloaded: let the watcher poll a few times
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert rec.results == []
        write(path, OTHER_VALID_YAML)  # different size, so the stamp changes whatever the mtime
        await _wait_until(lambda: rec.results == [True])
        assert sorted(rec.applied[0].models) == ["m", "n"]
        write(path, "pools: [\n")
        await _wait_until(lambda: rec.results == [True, False])
        assert len(rec.applied) == 1
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
