"""What the API accepts, exactly: no silent conversion of loose types, every integer inside
what both stores hold, a bounded command, and error bodies that name the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.checkpoint_folder import DEFAULT_ROOT, job_folder
from scheduler.config import load_job_spec
from values.errors import ConfigError
from values.strict import INT64_MAX

from .api_harness import Api, make_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    made = make_api(f"sqlite:///{tmp_path_factory.mktemp('strict') / 'pool.db'}")
    with made.client:
        yield made


def _submit(api: Api, **spec: Any) -> Any:
    gang = {"flavor": "h100", **spec.pop("gang", {})}
    return api.call("member@a", "POST", "/v1/jobs", {"spec": {"name": "x", "org": "a", "gang": gang, **spec}})


def _job_count(api: Api) -> int:
    return len(api.call("pool-admin", "GET", "/v1/jobs", limit=1000).json())


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"gang": {"replicas": True}}, "spec.gang.replicas", "whole number (got True)"),
        ({"gang": {"accelerators": "2"}}, "spec.gang.accelerators", "whole number (got '2')"),
        ({"preemptible": "yes"}, "spec.preemptible", "true or false (got 'yes')"),
        ({"grace_period_seconds": "30"}, "spec.grace_period_seconds", "must be a number"),
        ({"max_runtime_seconds": True}, "spec.max_runtime_seconds", "must be a number"),
        ({"gang": {"replicas": 2.0}}, "spec.gang.replicas", "whole number"),
        ({"image": "Not An Image"}, "spec.image", "'Not An Image' is not a container image reference"),
        ({"image": "x" * 600}, "spec.image", "at most 512 characters"),
        ({"restart": {"on": {"gpu": 1}}}, "spec.restart.on.gpu", "'gpu' is not a failure category"),
        (
            {"restart": {"on": {"oom": True}}},
            "spec.restart.on.oom",
            "'always', 'never' or a number of restarts",
        ),
        ({"restart": {"on": {"exit": -1}}}, "spec.restart.on.exit", "from 0 to 1000 (got -1)"),
    ],
)
def test_a_loose_type_is_refused_and_named_not_converted(
    api: Api, spec: dict[str, Any], field: str, words: str
) -> None:
    before = _job_count(api)
    resp = _submit(api, **spec)
    assert resp.status_code == 422, resp.text
    problem = resp.json()["errors"][0]
    assert problem["field"] == field and words in problem["message"]
    assert _job_count(api) == before


def test_a_whole_number_is_still_a_number_where_seconds_are_asked(api: Api) -> None:
    resp = _submit(api, max_runtime_seconds=3600, grace_period_seconds=5)
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["max_runtime_seconds"] == 3600.0


def test_a_command_past_the_bound_is_refused_and_not_echoed(api: Api) -> None:
    before = _job_count(api)
    resp = _submit(api, command=["python", "-c", "x" * 1_000_000])
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "spec.command"
    assert "must be at most 32768 characters" in resp.json()["detail"]
    assert len(resp.text) < 1000  # the refusal does not echo the million characters
    assert _job_count(api) == before
    many = _submit(api, env={f"K{i}": "v" * 200 for i in range(200)})  # 200 keys, 40,000+ characters
    assert many.status_code == 422 and "env included" in many.json()["detail"]


def test_too_many_env_keys_says_how_many(api: Api) -> None:
    resp = _submit(api, env={f"K{i}": "v" for i in range(300)})
    assert resp.json()["errors"] == [
        {"field": "spec.env", "message": "must have at most 256 item(s) (got 300)"}
    ]


def test_a_nul_byte_in_a_command_is_refused_by_the_api(api: Api) -> None:
    resp = _submit(api, command=["python", "a\x00b"])
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "spec.command"


def test_deeply_nested_json_is_named_as_the_body(api: Api) -> None:
    deep = '{"spec": ' + '{"a": ' * 5000 + "1" + "}" * 5001
    resp = api.client.post(
        "/v1/jobs", content=deep, headers={**api.as_("member@a"), "content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["errors"] == [{"field": "body", "message": "is not valid JSON: nested too deeply"}]


@pytest.mark.parametrize("value", [2**63, 10**30])
def test_an_integer_past_64_bits_is_a_422_not_a_500(api: Api, value: int) -> None:
    job = api.submit("member@a")
    path = f"{job_folder(DEFAULT_ROOT, job['id'])}/step.pt"
    resp = api.call("member@a", "POST", f"/v1/jobs/{job['id']}/checkpoints", {"path": path, "step": value})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "step"
    fits = api.call(
        "member@a", "POST", f"/v1/jobs/{job['id']}/checkpoints", {"path": path, "step": INT64_MAX}
    )
    assert fits.status_code == 201, fits.text


def test_every_integer_the_api_accepts_fits_a_64_bit_column(api: Api) -> None:
    """Walks the OpenAPI document: a new integer field without an upper bound fails here."""
    doc = api.client.get("/openapi.json").json()
    unbounded: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                top, bottom = node.get("maximum"), node.get("minimum")
                # FastAPI writes the bounds as JSON numbers (floats): 2**63 - 1 reads as 2.0**63.
                if top is None or top > float(INT64_MAX) or bottom is None or bottom < -float(INT64_MAX):
                    unbounded.append(where)
            for key, child in node.items():
                walk(child, f"{where}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}[{i}]")

    inputs = _request_schemas(doc)
    assert {"AgentReport", "CheckpointRequest", "JobSpec", "Gang"} <= inputs.keys()
    walk(inputs, "schemas")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            walk(op.get("parameters", []), f"{method.upper()} {path}")
    assert unbounded == []


def _request_schemas(doc: dict[str, Any]) -> dict[str, Any]:
    """The schemas a request body refers to, directly or through another schema."""
    schemas = doc["components"]["schemas"]
    bodies = [
        op["requestBody"] for ops in doc["paths"].values() for op in ops.values() if "requestBody" in op
    ]
    todo, seen = _refs(bodies), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _refs(schemas[name])
    return {name: schemas[name] for name in seen}


def _refs(node: Any) -> list[str]:
    return re.findall(r"#/components/schemas/([A-Za-z0-9_.-]+)", json.dumps(node))


def test_a_nul_byte_in_a_spec_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b'name: x\norg: a\ngang: {flavor: h100}\ncommand: ["a\x00b"]\n')
    with pytest.raises(ConfigError) as caught:
        load_job_spec(path)
    assert caught.value.lines() == [
        f"{path}: invalid YAML: line 4, column 13: character U+0000 is not allowed"
    ]
