"""`trainpool agent`: run the node agent (flags over TRAINPOOL_AGENT_* over --config)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from agents.config import AgentConfigError, load_config


def agent(
    server: Annotated[str | None, typer.Option("--server", help="Server URL.")] = None,
    node: Annotated[str | None, typer.Option("--node", help="This node's name (default: hostname).")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="File holding the agent token (else TRAINPOOL_AGENT_TOKEN)."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Address peers probe (default: the one routing to the server)."),
    ] = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Listen address of the probe port.")] = None,
    probe_port: Annotated[
        int | None, typer.Option("--probe-port", help="UDP echo and TCP probe port.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="/metrics port; 0 for none.")
    ] = None,
    rack: Annotated[str | None, typer.Option("--rack")] = None,
    spine: Annotated[str | None, typer.Option("--spine")] = None,
    zone: Annotated[str | None, typer.Option("--zone")] = None,
    flavor: Annotated[str | None, typer.Option("--flavor")] = None,
    accelerators: Annotated[int | None, typer.Option("--accelerators")] = None,
    probe_interval: Annotated[
        float | None,
        typer.Option("--probe-interval", help="Seconds between probe rounds (default: the server's)."),
    ] = None,
    report_interval: Annotated[
        float | None,
        typer.Option("--report-interval", help="Seconds between reports (default: the server's)."),
    ] = None,
    interface: Annotated[
        list[str] | None, typer.Option("--interface", help="Watch only this NIC; repeatable.")
    ] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--no-gpu", help="Probe GPUs through NVML.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with the same settings.")] = None,
) -> None:
    """Run the node agent: pingmesh, NIC/InfiniBand counters, GPU health, reports, /metrics."""
    from agents.exporter import AgentMetrics
    from agents.runner import Agent, Refused

    flags = {
        "server": server, "node": node, "token_file": token_file, "address": address, "bind": bind,
        "probe_port": probe_port, "metrics_port": metrics_port, "rack": rack, "spine": spine, "zone": zone,
        "flavor": flavor, "accelerators": accelerators, "probe_interval": probe_interval,
        "report_interval": report_interval, "interfaces": interface or [], "gpu": gpu,
    }  # fmt: skip
    try:
        cfg = load_config(flags, config)
        cfg.secret()
    except AgentConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per report is noise
    metrics = AgentMetrics()
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port, cfg.bind)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(cfg, metrics).run(stop)

    try:
        asyncio.run(main())
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: {exc} (is --probe-port {cfg.probe_port} free?)", err=True)
        raise typer.Exit(1) from None
