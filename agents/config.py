"""The agent's settings: flags over environment (``TRAINPOOL_AGENT_<FIELD>``) over a
YAML file (``--config``) over defaults. A wrong value names its field and source."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from values.errors import validation_problems
from values.names import Name

ENV_PREFIX = "TRAINPOOL_AGENT_"


class AgentConfigError(ValueError):
    pass


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    server: str = "http://127.0.0.1:8642"
    token: str | None = None
    token_file: Path | None = None
    node: Name = Field(default_factory=lambda: socket.gethostname().split(".")[0].lower())
    # Where peers reach this node's probe port (its address on the training network).
    address: str | None = None
    bind: str = "0.0.0.0"
    probe_port: int = Field(8643, ge=1, le=65535)
    metrics_port: int = Field(8644, ge=0, le=65535)  # 0: no /metrics
    flavor: Name | None = None
    accelerators: int = Field(0, ge=0, le=1024)
    zone: Name | None = None
    spine: Name | None = None
    rack: Name | None = None
    # None: what the server says at registration.
    probe_interval: float | None = Field(None, gt=0, le=3600)
    report_interval: float | None = Field(None, gt=0, le=3600)
    probe_timeout: float = Field(3.0, gt=0, le=60)
    interfaces: list[str] = Field(default_factory=list)  # empty: every interface but lo
    sysfs_net: Path = Path("/sys/class/net")
    sysfs_infiniband: Path = Path("/sys/class/infiniband")
    gpu: bool = True

    def secret(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            try:
                lines = self.token_file.read_text().strip().splitlines()
            except OSError as exc:
                problem = f"token_file: cannot read {self.token_file} ({exc.strerror})"
                raise AgentConfigError(problem) from None
            return lines[0].strip() if lines else None
        return None

    def reach_address(self) -> str:
        return self.address or _guess_address(self.server)


def _guess_address(server: str) -> str:
    """The local address that routes to the server: right on a one-network node."""
    host = server.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def load_config(
    flags: Mapping[str, Any], file: Path | None = None, env: Mapping[str, str] | None = None
) -> AgentConfig:
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source: dict[str, str] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AgentConfigError(f"--config {file}: cannot read ({type(exc).__name__})") from None
        if not isinstance(loaded, dict):
            raise AgentConfigError(f"--config {file}: expected a mapping of settings")
        data.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
        source.update({k: str(file) for k in data})
    for name in AgentConfig.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            data[name] = value.split(",") if name == "interfaces" else value
            source[name] = ENV_PREFIX + name.upper()
    for name, value in flags.items():
        if value is not None and value != [] and value != ():
            data[name] = value
            source[name] = "--" + name.replace("_", "-")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        field, message = validation_problems(exc, AgentConfig)[0]
        where = source.get(field.split(".")[0], "")
        raise AgentConfigError(f"{field}: {message}" + (f" (from {where})" if where else "")) from None
