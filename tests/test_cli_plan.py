"""`trainpool plan` and `trainpool validate` on the examples and on broken input: the
decisions come out as tables, JSON or YAML; a bad file is one line per problem, exit 2."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from scheduler.cli.main import app
from values.decisions import PendingReason, PlaceReason

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "160"})


@pytest.fixture
def walkthrough(examples) -> list[str]:
    return [
        "--pool", str(examples / "pools" / "small.yaml"),
        "--jobs", str(examples / "jobs" / "walkthrough"),
        "--running", str(examples / "state" / "small-busy.yaml"),
    ]  # fmt: skip


def plan_json(*args: str) -> dict:
    result = invoke("plan", *args, "-o", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_table_shows_every_kind_of_decision(walkthrough):
    result = invoke("plan", *walkthrough)
    assert result.exit_code == 0, result.output
    for word in ("placed", "preempted", "reserved", "pending", "rejected", "vit-pretrain", "never_fits"):
        assert word in result.stdout


def test_every_job_gets_exactly_one_outcome(walkthrough, examples, small_pool):
    step = plan_json(*walkthrough)["steps"][0]
    outcomes = [p["job"] for p in step["placements"]]
    outcomes += [p["job"] for p in step["pending"]] + [r["job"] for r in step["rejections"]]
    job_files = sorted((examples / "jobs" / "walkthrough").glob("*.yaml"))
    assert sorted(outcomes) == sorted(yaml.safe_load(p.read_text())["name"] for p in job_files)
    nodes = {n.name for n in small_pool.all_nodes}
    for placement in step["placements"]:
        assert placement["reason"] in set(PlaceReason)
        assert {a["node"] for a in placement["assignments"]} <= nodes
    assert {p["reason"] for p in step["pending"]} <= set(PendingReason)


def test_steps_advance_time_and_start_reserved_jobs(walkthrough):
    steps = plan_json(*walkthrough, "--steps", "6")["steps"]
    times = [s["time"] for s in steps]
    assert times == sorted(times) and len(set(times)) == len(times)
    reserved = {r["job"]: r["start_at"] for r in steps[0]["reservations"]}
    assert reserved, "the walk-through shows a reservation in its first step"
    started = {p["job"]: s["time"] for s in steps for p in s["placements"]}
    for job, start_at in reserved.items():
        # EASY backfill's promise: a reserved job starts by its reservation's time.
        assert job in started and started[job] <= start_at


def test_yaml_output_matches_json(walkthrough):
    as_json = plan_json(*walkthrough)
    result = invoke("plan", *walkthrough, "-o", "yaml")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == as_json


def test_jobs_can_be_given_as_files(examples):
    jobs = examples / "jobs"
    doc = plan_json("-p", str(examples / "pools" / "small.yaml"), "-j", str(jobs / "single-gpu.yaml"),
                    str(jobs / "multi-flavor.yaml"))  # fmt: skip
    placed = {p["job"] for p in doc["steps"][0]["placements"]}
    assert placed == {"debug-tokenizer", "eval-sweep"}, "an empty pool places both"


def test_large_pool_plan_runs(examples):
    doc = plan_json("-p", str(examples / "pools" / "large.yaml"), "-j", str(examples / "jobs"))
    assert doc["pool"] == "large" and doc["steps"][0]["placements"]


# --- bad input ---------------------------------------------------------------------------


def assert_clean_failure(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.stderr, result.stderr


def test_bad_job_names_file_line_and_field(examples, write_file):
    bad = write_file("bad.yaml", "name: j\norg: nlp\ngang:\n  replicas: 0\n  flavor: h100\n")
    result = invoke("plan", "-p", str(examples / "pools" / "small.yaml"), "-j", str(bad))
    assert_clean_failure(result, f"error: {bad}:4: gang.replicas: must be at least 1 (got 0)")


def test_every_bad_job_is_reported_not_just_the_first(examples, write_file):
    write_file("jobs/a.yaml", "name: a\norg: nlp\npriority: urgent\ngang: {flavor: h100}\n")
    write_file("jobs/b.yaml", "name: b\norg: nlp\ngang: {flavor: h100, replicas: x}\n")
    jobs = write_file("jobs/c.yaml", "name: c\norg: nlp\ngang: {flavor: h100}\n").parent
    result = invoke("plan", "-p", str(examples / "pools" / "small.yaml"), "-j", str(jobs))
    assert_clean_failure(
        result, "a.yaml: priority: unknown priority class 'urgent'", "b.yaml:3: gang.replicas"
    )
    assert len(result.stderr.strip().splitlines()) == 2


def test_bad_pool_and_bad_yaml_exit_2(write_file):
    pool = write_file(
        "pool.yaml", "flavors: [{name: h100}]\norgs: [{name: a, quotas: {h100: {nominal: -1}}}]\n"
    )
    assert_clean_failure(invoke("plan", "-p", str(pool)), "orgs[0].quotas.h100.nominal: must be at least 0")
    broken = write_file("broken.yaml", "flavors: [\n")
    assert_clean_failure(invoke("plan", "-p", str(broken)), "invalid YAML")
    assert_clean_failure(invoke("plan", "-p", "/nonexistent/pool.yaml"), "No such file")


def test_bad_running_state_names_the_entry(examples, write_file):
    state = write_file(
        "state.yaml",
        "running:\n  - spec: {name: r, org: nlp, gang: {flavor: h100, replicas: 2, accelerators: 8}}\n"
        "    assignments: {h100-a0: 1, nowhere: 1}\n",
    )
    result = invoke("plan", "-p", str(examples / "pools" / "small.yaml"), "--running", str(state))
    assert_clean_failure(result, "running[0].assignments.nowhere: unknown node 'nowhere'")


def test_validate_prints_ok_and_warnings(examples, write_file):
    overcommitted = write_file(
        "pool.yaml",
        "flavors: [{name: h100}]\norgs: [{name: a, quotas: {h100: {nominal: 16}}}]\n"
        "nodes: [{name: n0, flavor: h100, accelerators: 8}]\n",
    )
    result = invoke(
        "validate", str(examples / "pools" / "small.yaml"), str(examples / "jobs"), str(overcommitted)
    )
    assert result.exit_code == 0, result.output
    assert "small.yaml: OK (pool 'small': 2 flavors, 10 nodes, 80 accelerators, 3 orgs)" in result.stdout
    assert "single-gpu.yaml: OK (job 'debug-tokenizer'" in result.stdout
    assert "pool.yaml: warning: flavor 'h100': nominal quotas sum to 16" in result.stdout


def test_validate_checks_jobs_against_a_pool(examples, write_file):
    job = write_file("job.yaml", "name: j\norg: physics\ngang: {flavor: tpu}\n")
    assert invoke("validate", str(job)).exit_code == 0
    result = invoke("validate", "--pool", str(examples / "pools" / "small.yaml"), str(job))
    assert_clean_failure(
        result, "job.yaml: org: unknown org 'physics'", "job.yaml: gang.flavors[0]: unknown flavor"
    )


def test_validate_warns_that_a_jobs_image_is_for_the_kubernetes_backend(examples, write_file):
    job = write_file("job.yaml", "name: j\norg: vision\ngang: {flavor: h100}\nimage: ghcr.io/ml/train:2\n")
    result = invoke("validate", "--pool", str(examples / "pools" / "small.yaml"), str(job))
    assert result.exit_code == 0, result.output
    assert f"{job}: OK (job 'j'" in result.stdout
    assert (
        f"{job}: warning: image 'ghcr.io/ml/train:2' is used by the kubernetes backend only" in result.stdout
    )
    bad = write_file("bad.yaml", "name: j\norg: vision\ngang: {flavor: h100}\nimage: 'Not An Image'\n")
    assert_clean_failure(invoke("validate", str(bad)), "bad.yaml:4: image: 'Not An Image' is not a container")


def test_validate_with_a_pool_catches_what_submit_refuses(examples, write_file):
    pool = str(examples / "pools" / "small.yaml")
    huge = write_file(
        "huge.yaml", "name: j\norg: vision\ngang: {flavor: h100, accelerators: 8, replicas: 7}\n"
    )
    result = invoke("validate", "--pool", pool, str(huge))
    assert_clean_failure(result, "huge.yaml: gang: can never run in this pool:", "(never_fits)")
    greedy = write_file(
        "greedy.yaml", "name: j\norg: vision\ngang: {flavor: h100, accelerators: 8, replicas: 6}\n"
    )
    result = invoke("validate", "--pool", pool, str(greedy))  # 48 of the pool's 48: vision may hold 32 + 16
    assert result.exit_code == 0, result.output
    unchecked = invoke("validate", str(huge))
    assert unchecked.exit_code == 0 and "not checked against a pool" in unchecked.output


def test_validate_refuses_an_alias_bomb(write_file):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    bomb = write_file("bomb.yaml", "\n".join(levels) + "\n")
    assert_clean_failure(invoke("validate", str(bomb)), "alias bomb")


def test_a_reclaims_beneficiary_goes_first_on_the_next_step_as_in_the_service() -> None:
    from scheduler.cli.plan import PlanState, _apply
    from values.decisions import Decisions, Preemption, PreemptReason
    from values.domain import JobSpec
    from values.snapshot import PendingJob, RunningJob

    spec = JobSpec.model_validate({"name": "t", "org": "a", "gang": {"accelerators": 8, "flavor": "h100"}})
    victim = RunningJob(id="v", spec=spec, priority=0, submitted_at=0.0, started_at=0.0, flavor="h100",
                        assignments=(("n1", 1),))  # fmt: skip
    state = PlanState(now=10.0, pending={"b": PendingJob("b", spec, 0, 5.0)}, running={"v": victim})
    _apply(state, Decisions(preemptions=[Preemption("v", PreemptReason.RECLAIM, beneficiary="b")]))
    assert state.pending["b"].nominated and state.pending["v"].preempted_by == "b"


def test_version_prints_the_installed_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("trainpool 0.")
