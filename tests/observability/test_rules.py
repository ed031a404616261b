"""The alert rules with promtool, and the generated files being current."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scheduler.observability.rules import all_alerts

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "trainpool-rules.yaml"
UNIT_TESTS = Path(__file__).with_name("trainpool-rules.test.yaml")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does)")
    return found


@pytest.mark.integration
def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_alerts())} rules found" in result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", UNIT_TESTS.name], capture_output=True, text=True, cwd=UNIT_TESTS.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a.name for a in all_alerts()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_generated_rules_and_dashboards_are_current() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk not installed")
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.observability", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
