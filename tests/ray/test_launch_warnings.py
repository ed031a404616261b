"""The ray backend's launch warns that a job's image is ignored: once per job, at its
first attempt. Unit level: no Ray cluster runs (the launch stops at the node check)."""

from __future__ import annotations

import logging

import pytest

from scheduler.backends.base import BackendError, Launch
from values.domain import JobSpec

ray_backend = pytest.importorskip("scheduler.backends.ray.backend")


def _backend(monkeypatch: pytest.MonkeyPatch) -> object:
    # The parts of a RayBackend that launch() reads before it asks Ray for anything.
    b = object.__new__(ray_backend.RayBackend)
    b.namespace, b._gangs, b._nodes = "trainpool-test", {}, {}
    monkeypatch.setattr(ray_backend.kv, "_internal_kv_get", lambda *a, **k: None)
    monkeypatch.setattr(b, "_refresh_nodes", lambda: [])
    return b


def _launch(job: str, attempt: int, **spec: object) -> Launch:
    js = JobSpec.model_validate({"name": "t", "org": "a", "gang": {"flavor": "h100"}, **spec})
    return Launch(job, attempt, js, "h100", (("h100-01", 1),))


def test_launch_logs_once_per_job_that_its_image_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    b = _backend(monkeypatch)
    caplog.set_level(logging.WARNING, logger=ray_backend.__name__)
    for attempt in (0, 1, 2):  # a first launch, then restarts of the same job
        with pytest.raises(BackendError, match="not in the Ray cluster"):
            b.launch(_launch("j-img", attempt, image="ghcr.io/ml/train:2"), 0.0)  # type: ignore[attr-defined]
    with pytest.raises(BackendError):
        b.launch(_launch("j-plain", 0), 0.0)  # type: ignore[attr-defined]
    said = [r for r in caplog.records if r.name == ray_backend.__name__ and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in said] == [
        "job j-img: image 'ghcr.io/ml/train:2' is ignored: the ray backend runs the command in the Ray "
        "workers' environment (only the kubernetes backend runs a job's image)"
    ]
