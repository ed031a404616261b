"""The CLI against a live server in the test's process: uvicorn on a free port, the
control loop driven in fast-forward (one virtual second per 50 ms)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from typer.testing import CliRunner

from scheduler.cli.main import app

from .api_harness import Api, make_api
from .conftest import free_port

runner = CliRunner()


class Live:
    def __init__(self, api: Api, url: str) -> None:
        self.api = api
        self.url = url

    def run(self, *args: str, token: str = "member@a", **env: str) -> tuple[int, str]:
        full_env = {"TRAINPOOL_URL": self.url, "TRAINPOOL_TOKEN": self.api.tokens[token], **env}
        result = runner.invoke(app, list(args), env=full_env)
        return result.exit_code, result.output


@contextlib.contextmanager
def serving(api: Api) -> Iterator[Live]:
    """``api`` served on a free port, its loop driven in fast-forward, until the end."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    stop = threading.Event()

    def drive() -> None:  # the control loop, in fast-forward: 1 virtual second per 50 ms
        while not stop.is_set():
            api.cycle(1.0)
            stop.wait(0.05)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        yield Live(api, f"http://127.0.0.1:{port}")
    finally:
        stop.set()
        server.should_exit = True
        thread.join(timeout=10)
        driver.join(timeout=10)


@pytest.fixture(scope="module", name="live")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serving(make_api(f"sqlite:///{tmp_path_factory.mktemp('cli') / 'pool.db'}")) as live:
        yield live
