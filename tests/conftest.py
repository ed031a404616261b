"""Fixtures shared across the test suite (keep this file small)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.config import PoolConfig, load_pool_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def examples() -> Path:
    """The repository's examples/ directory (pools, jobs, state files)."""
    return EXAMPLES


@pytest.fixture(scope="session")
def small_pool() -> PoolConfig:
    return load_pool_config(EXAMPLES / "pools" / "small.yaml")


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """write_file(name, text) -> the path of a new file under tmp_path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write
