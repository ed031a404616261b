"""The restart rule by failure category (values/restarts.py): which failures restart a job,
how many times, after what backoff; what a spec without ``on`` meant before categories it
still means; bad input is refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.backends.base import Phase
from scheduler.backends.gang_phase import gang_phase
from scheduler.backends.kubernetes.status import pod_verdict, replica_of
from scheduler.config import load_job_spec
from scheduler.failures import category_of
from values.errors import ConfigError
from values.restarts import FailureCategory, RestartPolicy, category_named

INFRA, HEALTH, OOM, SIGNAL, EXIT, TIMEOUT = (
    FailureCategory.INFRASTRUCTURE, FailureCategory.HEALTH, FailureCategory.OOM, FailureCategory.SIGNAL,
    FailureCategory.EXIT, FailureCategory.TIMEOUT,
)  # fmt: skip


def policy(**kw: Any) -> RestartPolicy:
    return RestartPolicy.model_validate({"backoff_seconds": 10, "backoff_max_seconds": 60, **kw})


def restarts(p: RestartPolicy, category: FailureCategory, **earlier: int) -> bool:
    return p.verdict(category, {FailureCategory(k): n for k, n in earlier.items()}, 0).restart


def test_without_on_a_spec_means_what_it_always_meant() -> None:
    p = policy(max_restarts=2)
    assert restarts(p, INFRA, infrastructure=50) and restarts(p, HEALTH, health=50)  # always
    assert not restarts(p, TIMEOUT)  # never
    # The job's own failures share max_restarts, whatever their kind.
    assert restarts(p, EXIT, oom=1) and not restarts(p, EXIT, oom=1, signal=1)
    assert not restarts(p, OOM, exit=2)


def test_a_category_named_in_on_counts_its_own_restarts() -> None:
    p = policy(max_restarts=1, on={"oom": 2, "exit": 3})
    assert restarts(p, OOM, oom=1, exit=2) and not restarts(p, OOM, oom=2)
    assert restarts(p, EXIT, exit=2, oom=2) and not restarts(p, EXIT, exit=3)
    # signal is not named: it alone is left on the shared max_restarts.
    assert restarts(p, SIGNAL, oom=2, exit=3) and not restarts(p, SIGNAL, signal=1)


def test_always_and_never_override_the_defaults_both_ways() -> None:
    p = policy(max_restarts=0, on={"infrastructure": 1, "health": "never", "exit": "always", "timeout": 2})
    assert restarts(p, INFRA) and not restarts(p, INFRA, infrastructure=1)
    assert not restarts(p, HEALTH)
    assert restarts(p, EXIT, exit=999)
    assert restarts(p, TIMEOUT, timeout=1) and not restarts(p, TIMEOUT, timeout=2)


def test_own_failures_back_off_doubling_up_to_the_cap_infrastructure_never_waits() -> None:
    p = policy(on={"exit": "always", "infrastructure": "always"})
    assert [p.verdict(EXIT, {}, charged).backoff for charged in range(5)] == [10, 20, 40, 60, 60]
    assert p.verdict(INFRA, {}, 4).backoff == 0.0
    assert p.verdict(EXIT, {}, 10**6).backoff == 60  # no overflow on a very long history


def test_the_verdict_says_which_rule_decided() -> None:
    p = policy(max_restarts=1, on={"oom": 2})
    assert p.verdict(OOM, {OOM: 1}, 1).why == "restart 2 of 2 (restart.on.oom)"
    assert p.verdict(OOM, {OOM: 2}, 2).why == "no restart left: 2 allowed (restart.on.oom)"
    assert p.verdict(EXIT, {}, 0).why == "restart 1 of 1 (max_restarts)"
    assert p.verdict(TIMEOUT, {}, 0).why == "timeout failures never restart (default)"


@pytest.mark.parametrize(
    ("code", "message", "category"),
    [
        (137, "rank 0: exit code 137 (killed by SIGKILL)", OOM),  # the shell's 128+9 (Ray, sim)
        (-9, "", OOM),  # Python's subprocess
        (1, "rank 2: exit code 1 (OOMKilled)", OOM),  # Kubernetes knew better than the code
        (139, "rank 0: exit code 139 (killed by SIGSEGV)", SIGNAL),
        (-6, "", SIGNAL),
        (3, "rank 0: exit code 3", EXIT),
        (1, "cannot start (ImagePullBackOff)", EXIT),
    ],
)
def test_a_gangs_own_failure_is_classed_by_what_its_backend_saw(
    code: int, message: str, category: FailureCategory
) -> None:
    assert category_of(code, message) is category


def test_events_stored_before_categories_count_as_what_they_were() -> None:
    assert category_named("job") is EXIT  # an own failure: on the shared budget, as then
    assert category_named("infrastructure") is INFRA
    assert category_named("oom") is OOM
    assert category_named(None) is None and category_named("preempted") is None


JOB = "name: j\norg: nlp\ngang: {flavor: h100}\nrestart:\n  max_restarts: 1\n"


def test_a_job_file_writes_on_as_a_plain_yaml_key() -> None:
    # YAML 1.1 would read a bare `on` as true; the loader keeps keys as text.
    spec = load_job_spec(JOB + "  on: {infrastructure: always, oom: 2, exit: 3, timeout: never}\n")
    assert spec.restart.on == {INFRA: "always", OOM: 2, EXIT: 3, TIMEOUT: "never"}
    assert spec.restart.rule(SIGNAL) is None and spec.restart.rule(HEALTH) == "always"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "on: {gpu: 2}",
            "restart.on.gpu: invalid key: 'gpu' is not a failure category (use one of "
            "infrastructure, health, oom, signal, exit, timeout, hang, straggler)",
        ),
        (
            "on: {oom: -1}",
            "restart.on.oom: must be 'always', 'never' or a number of restarts from 0 to 1000 (got -1)",
        ),
        ("on: {oom: sometimes}", "restart.on.oom: must be 'always', 'never' or a number"),
        ("on: {oom: yes}", "restart.on.oom: must be 'always', 'never' or a number"),  # a boolean value
        ("on: {oom: '2'}", "restart.on.oom: must be 'always', 'never' or a number"),
        ("on: {oom: 1001}", "restart.on.oom: must be 'always', 'never' or a number"),
        ("on: [oom]", "restart.on: must be a mapping"),
        ("on: {oom: 1, oom: 2}", "duplicate key 'oom'"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_job_spec(JOB + f"  {line}\n")
    (got,) = info.value.lines()
    assert message in got and (got.startswith("<text>:6: ") or "line 6" in got), got


def test_a_pod_the_kubelet_reports_oomkilled_is_an_oom_whatever_its_exit_code() -> None:
    # A shell as PID 1 may exit 1 after its child was OOM-killed; the kubelet still says so.
    term = {"exitCode": 1, "reason": "OOMKilled"}
    pod = {
        "spec": {"nodeName": "n0"},
        "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": term}}]},
    }
    verdict = pod_verdict(pod, gone=False, node_ok=True, ours_deleting=False)
    judged = gang_phase([replica_of(0, verdict, 5.0)], stop_requested_at=None, now=10.0, window=0.0)
    assert judged.phase is Phase.FAILED
    assert category_of(judged.exit_code, judged.message) is OOM
