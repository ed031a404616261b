"""Pool configs and job specs from YAML: the examples load, node groups expand the same
way every time, every cross-check names the field (and line), hostile YAML fails fast."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from textwrap import dedent

import pytest
from pydantic import ValidationError

from scheduler.config import (
    MAX_FILE_BYTES,
    NodeGroup,
    PolicyConfig,
    job_problems,
    job_warnings,
    load_job_spec,
    load_pool_config,
    parse_pool_config,
    warnings,
)
from values.domain import Gang, JobSpec
from values.errors import ConfigError, format_validation_error
from values.snapshot import Ordering, Policy

BASE = """\
flavors:
  - {name: h100}
  - {name: ascend-910b, vendor: huawei, visibility_env: ASCEND_RT_VISIBLE_DEVICES}
orgs:
  - name: vision
    quotas: {h100: {nominal: 8}}
  - name: nlp
    quotas: {h100: {nominal: 8, lending_limit: 4}, ascend-910b: {nominal: 8}}
nodes:
  - {name: n0, flavor: h100, accelerators: 8}
  - {name: n1, flavor: h100, accelerators: 8}
  - {name: m0, flavor: ascend-910b, accelerators: 8}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_pool_config(dedent(text), "pool.yaml")
    return info.value.lines()


# --- the examples ------------------------------------------------------------------------


def test_small_example_loads_without_warnings(small_pool):
    assert small_pool.capacity() == {"h100": 48, "ascend-910b": 32}
    assert {o.name for o in small_pool.orgs} == {"vision", "nlp", "research"}
    assert warnings(small_pool) == []
    research = next(o for o in small_pool.orgs if o.name == "research")
    assert all(q.nominal == 0 for q in research.quotas.values()), "research is the borrow-only org"


def test_large_example_has_over_a_thousand_nodes_on_several_spines(examples):
    config = load_pool_config(examples / "pools" / "large.yaml")
    nodes = config.all_nodes
    assert len(nodes) >= 1000
    assert len({n.name for n in nodes}) == len(nodes)
    assert len({n.topology.spine for n in nodes}) >= 4
    assert {"kunlun-p800", "mlu370"} <= set(config.capacity())
    assert len(config.orgs) >= 10
    assert warnings(config) == []


def test_example_jobs_are_valid_for_the_small_pool(examples, small_pool):
    files = sorted((examples / "jobs").rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        spec = load_job_spec(path)
        if spec.name == "vit-giant":  # rejected on purpose: never fits, but well formed
            continue
        if path.name == "embedded-hello.yaml":  # for the pool `trainpool up` starts: tests/embedded
            continue
        assert job_problems(small_pool, spec) == [], path


# --- node groups -------------------------------------------------------------------------


def test_node_group_spreads_nodes_over_racks_in_contiguous_blocks():
    group = NodeGroup(flavor="h100", count=10, accelerators=8, spines=2, racks_per_spine=2, name_prefix="gpu")
    nodes = group.expand()
    assert [n.name for n in nodes[:3]] == ["gpu-00", "gpu-01", "gpu-02"]
    racks = [n.topology.rack for n in nodes]
    assert racks == ["gpu-s0-r0"] * 3 + ["gpu-s0-r1"] * 2 + ["gpu-s1-r0"] * 3 + ["gpu-s1-r1"] * 2
    assert {n.topology.spine for n in nodes} == {"gpu-s0", "gpu-s1"}
    assert nodes == group.expand(), "expansion is deterministic"


def test_node_groups_and_explicit_nodes_are_all_in_the_snapshot():
    config = parse_pool_config(
        BASE + "node_groups:\n  - {flavor: h100, count: 4, accelerators: 8, name_prefix: big, zone: z2}\n"
    )
    snapshot = config.snapshot()
    assert [n.name for n in snapshot.nodes] == ["n0", "n1", "m0", "big-00", "big-01", "big-02", "big-03"]
    assert config.capacity()["h100"] == 48
    assert all(n.topology.zone == "z2" for n in snapshot.nodes[3:])


def test_groups_sharing_a_topology_prefix_share_racks():
    config = parse_pool_config(
        BASE
        + dedent("""\
        node_groups:
          - {flavor: h100, count: 2, accelerators: 8, name_prefix: g, topology_prefix: row1}
          - {flavor: ascend-910b, count: 2, accelerators: 8, name_prefix: a, topology_prefix: row1}
        """)
    )
    racks = {n.topology.rack for n in config.all_nodes[3:]}
    assert racks == {"row1-s0-r0"}


# --- cross-checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("- {name: h100}", "- {name: h100}\n  - {name: h100}"),
            "pool.yaml:3: flavors[1].name: duplicate flavor 'h100'",
        ),
        (("  - name: nlp", "  - name: vision"), "pool.yaml:7: orgs[1].name: duplicate org 'vision'"),
        (
            ("{h100: {nominal: 8}}", "{tpu: {nominal: 8}}"),
            "pool.yaml:6: orgs[0].quotas.tpu: unknown flavor 'tpu'",
        ),
        (
            ("{name: m0, flavor: ascend-910b", "{name: m0, flavor: mlu370"),
            "pool.yaml:12: nodes[2].flavor: unknown flavor 'mlu370'",
        ),
        (
            ("{name: n1,", "{name: n0,"),
            "pool.yaml:11: nodes[1].name: node name 'n0' is already used by nodes[0]",
        ),
    ],
)
def test_cross_checks_name_the_field_and_line(change, expected):
    old, new = change
    lines = problems_of(BASE.replace(old, new, 1))
    assert any(line.startswith(expected) for line in lines), lines


def test_duplicate_priority_classes_and_teams_are_refused():
    text = BASE + "priority_classes: [{name: low, value: 1}, {name: low, value: 2}]\n"
    text = text.replace("  - name: vision\n", "  - name: vision\n    teams: [{name: cv}, {name: cv}]\n")
    lines = problems_of(text)
    assert any("priority_classes[1].name: duplicate priority class 'low'" in line for line in lines)
    assert any("orgs[0].teams[1].name: duplicate team 'cv'" in line for line in lines)


def test_node_group_flavor_and_name_clashes_are_refused():
    lines = problems_of(
        BASE
        + dedent("""\
        node_groups:
          - {flavor: tpu, count: 2, accelerators: 8}
          - {flavor: h100, count: 3, accelerators: 8, name_prefix: n}
        """)
    )
    assert any("node_groups[0].flavor: unknown flavor 'tpu'" in line for line in lines)
    # Group 1 expands to n-00, n-01, n-02: no clash with n0/n1; make one that does clash.
    lines = problems_of(
        BASE.replace("{name: n0,", "{name: gpu-01,")
        + "node_groups:\n  - {flavor: h100, count: 3, accelerators: 8, name_prefix: gpu}\n"
    )
    assert any("node_groups[0]: node name 'gpu-01' is already used by nodes[0]" in line for line in lines)


def test_quota_rule_violation_names_the_quota_field():
    lines = problems_of(BASE.replace("{nominal: 8, lending_limit: 4}", "{nominal: 4, lending_limit: 9}"))
    assert lines == [
        "pool.yaml:8: orgs[1].quotas.h100.lending_limit: lending_limit (9) cannot exceed nominal (4)"
    ]


def test_every_shape_problem_is_reported_at_once():
    text = BASE.replace("accelerators: 8}", "accelerators: -1}", 1).replace("- name: nlp", "- name: NLP!")
    text += "polcy: {}\n"
    lines = problems_of(text)
    assert "pool.yaml:10: nodes[0].accelerators: must be at least 0 (got -1)" in lines
    assert any(line.startswith("pool.yaml:7: orgs[1].name: 'NLP!' is not a valid name") for line in lines)
    assert "pool.yaml:13: polcy: unknown field (did you mean 'policy'?)" in lines


def test_one_bad_item_is_one_problem_not_also_a_too_short_list():
    lines = problems_of(
        BASE.replace(
            "  - {name: ascend-910b, vendor: huawei, visibility_env: ASCEND_RT_VISIBLE_DEVICES}\n", ""
        )
        .replace("- {name: h100}", "- {name: H100}")
        .replace("ascend-910b: {nominal: 8}", "")
    )
    assert [line.split(": ")[1] for line in lines] == ["flavors[0].name"], lines


def test_a_missing_section_is_named():
    lines = problems_of("flavors: [{name: h100}]\n")
    assert lines == ["pool.yaml:1: orgs: is required"]


def test_policy_section_maps_to_the_snapshot_policy():
    config = parse_pool_config(BASE + "policy: {ordering: fifo, backfill: false, half_life_seconds: 3600}\n")
    policy = config.snapshot().policy
    assert (policy.ordering, policy.backfill, policy.half_life_seconds) == (Ordering.FIFO, False, 3600.0)
    assert policy.reclaim is True


def test_policy_config_mirrors_every_policy_field():
    assert set(PolicyConfig.model_fields) == {f.name for f in fields(Policy)}
    assert PolicyConfig().to_policy() == Policy()


# --- jobs, priorities, snapshot ----------------------------------------------------------


def test_unknown_priority_class_is_a_clear_error(small_pool):
    assert small_pool.priority_value("high") == 1000
    with pytest.raises(ConfigError) as info:
        small_pool.priority_value("urgent")
    assert info.value.lines() == [
        "priority: unknown priority class 'urgent' (this pool has: low, normal, high)"
    ]


def test_snapshot_carries_pending_jobs_with_their_priority_values(small_pool):
    spec = load_job_spec("name: j\norg: nlp\npriority: high\ngang: {flavor: h100}\n")
    job = small_pool.pending_job(spec, submitted_at=5.0)
    snap = small_pool.snapshot(pending=[job], usage={"nlp": {"h100": 10.0}})
    assert snap.pending[0].priority == 1000 and snap.pending[0].id == "j"
    assert snap.usage["nlp"]["h100"] == 10.0
    assert len(snap.nodes) == 10 and len(snap.orgs) == 3


def test_job_spec_from_a_path_string_or_text(examples):
    path = examples / "jobs" / "single-gpu.yaml"
    assert load_job_spec(str(path)) == load_job_spec(path) == load_job_spec(path.read_text())


def test_job_spec_errors_name_the_field(write_file):
    path = write_file("job.yaml", "name: j\norg: nlp\ngang:\n  replicas: 0\n  flavor: h100\n")
    with pytest.raises(ConfigError) as info:
        load_job_spec(path)
    assert info.value.lines() == [f"{path}:4: gang.replicas: must be at least 1 (got 0)"]


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11-slim",
        "pytorch",
        "registry.example.com:5000/ml/train:1.4",
        "nvcr.io/nvidia/pytorch:24.05-py3",
        "ghcr.io/org/train@sha256:" + "0" * 64,
        "localhost/a__b/c--d:v1@sha256:" + "a" * 64,
    ],
)
def test_a_job_names_its_container_image(image: str):
    assert load_job_spec(f"name: j\norg: nlp\ngang: {{flavor: h100}}\nimage: '{image}'\n").image == image


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Python:3.11", "image: 'Python:3.11' is not a container image reference"),  # upper-case path
        ("my image", "image: 'my image' is not a container image reference"),
        ("https://ghcr.io/org/train", "is not a container image reference"),  # a URL, not a reference
        ("'train:'", "image: 'train:' is not a container image reference"),  # a tag left empty
        ("a//b", "is not a container image reference"),
        ("train@sha256:abc", "is not a container image reference"),  # digest too short
        ("train:" + "t" * 129, "is not a container image reference"),  # tags are at most 128
        ("a/" + "b" * 300, "image: the repository name is longer than 255 characters"),
        ("x" * 513, "image: must be at most 512 characters long"),
        ("''", "image: must be at least 1 characters long"),
        ("3", "image: must be a string (got 3)"),
        ("[python]", "image: must be a string"),
    ],
)
def test_a_bad_image_is_refused_naming_the_field_and_line(write_file, value: str, message: str):
    path = write_file("job.yaml", f"name: j\norg: nlp\ngang: {{flavor: h100}}\nimage: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_job_spec(path)
    assert len(info.value.lines()) == 1 and info.value.lines()[0].startswith(f"{path}:4: image: ")
    assert message in info.value.lines()[0], info.value.lines()


def test_an_image_is_a_warning_for_the_backends_that_ignore_it():
    plain = load_job_spec("name: j\norg: nlp\ngang: {flavor: h100}\n")
    assert plain.image is None and job_warnings(plain) == []
    spec = load_job_spec("name: j\norg: nlp\ngang: {flavor: h100}\nimage: train:1\n")
    assert job_warnings(spec) == [
        "image 'train:1' is used by the kubernetes backend only: on the ray backend the command runs "
        "in the Ray workers' environment and the image is ignored"
    ]


def test_format_validation_error_uses_dots_and_indexes():
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"name": "j", "org": "o", "gang": {"flavors": ["h100", "h100"], "cpu": "x"}})
    lines = format_validation_error(info.value)
    assert "gang.cpu: must be a number (got 'x')" in lines
    assert "gang.flavors: flavors must not repeat" in lines
    with pytest.raises(ValidationError) as info:
        Gang.model_validate({"flavors": ["h100", "Bad Name"]})
    assert format_validation_error(info.value)[0].startswith("flavors[1]: 'Bad Name' is not a valid name")


def test_job_problems_against_a_pool(small_pool):
    spec = load_job_spec("name: j\norg: nobody\npriority: urgent\ngang: {flavors: [h100, tpu]}\n")
    paths = [path for path, _ in job_problems(small_pool, spec)]
    assert paths == ["org", "gang.flavors[1]", "priority"]


# --- hostile and broken YAML -------------------------------------------------------------

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_is_refused_quickly():
    started = time.perf_counter()
    lines = problems_of(BOMB)
    assert time.perf_counter() - started < 1.0
    assert "alias bomb" in lines[0]


def test_a_plain_oversized_document_is_not_called_a_bomb(monkeypatch):
    monkeypatch.setattr("scheduler.config.MAX_YAML_NODES", 100)
    lines = problems_of("a: [" + ", ".join(["1"] * 150) + "]\n")
    assert lines == ["pool.yaml: invalid YAML: line 1: has more than 100 values"]


def test_recursive_alias_and_deep_nesting_are_refused():
    assert "refers to the node that contains it" in problems_of("a: &a [1, *a]\n")[0]
    assert "nested deeper than" in problems_of("a: " + "[" * 200 + "]" * 200 + "\n")[0]


def test_anchors_and_merge_keys_still_work():
    text = BASE.replace(
        "nodes:\n", "x-node: &node {flavor: h100, accelerators: 8}\nnodes:\n  - {<<: *node, name: n9}\n"
    )
    lines = problems_of(text)  # x-node is not a pool field: refused by name, not by the guard
    assert len(lines) == 1 and lines[0].startswith("pool.yaml:9: x-node: unknown field")


def test_oversize_file_is_refused_before_reading(tmp_path: Path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no time spent writing it
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_pool_config(path)
    assert time.perf_counter() - started < 0.5
    assert "the limit is 5 MiB" in info.value.lines()[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flavors: [{name: h100}\n", "invalid YAML: line 2"),
        ("a: 1\na: 2\n", "line 2: duplicate key 'a'"),
        ("- just\n- a list\n", "expected a mapping (key: value) at the top level, got list"),
        ("", "expected a mapping (key: value) at the top level, got empty file"),
        ("a: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_broken_yaml_gives_one_clear_line(text, expected):
    lines = problems_of(text)
    assert len(lines) == 1 and expected in lines[0], lines


def test_missing_and_non_utf8_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="No such file"):
        load_pool_config(tmp_path / "nope.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_pool_config(path)


# --- warnings ----------------------------------------------------------------------------


def test_overcommitted_nominal_quota_is_a_warning_not_an_error():
    config = parse_pool_config(BASE.replace("{h100: {nominal: 8}}", "{h100: {nominal: 12}}"))
    assert warnings(config) == [
        "flavor 'h100': nominal quotas sum to 20 accelerators but the pool has 16; "
        "not every org can get its guaranteed share at once"
    ]


def test_flavor_without_nodes_and_missing_normal_class_are_warnings():
    text = BASE.replace("  - {name: m0, flavor: ascend-910b, accelerators: 8}\n", "")
    text += "priority_classes: [{name: low, value: 1}]\n"
    found = warnings(parse_pool_config(text))
    assert any("'ascend-910b' has no accelerators" in w for w in found)
    assert any("no priority class 'normal'" in w for w in found)
