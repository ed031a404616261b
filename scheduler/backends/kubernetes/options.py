"""``--backend-opt KEY=VALUE`` for the kubernetes backend, parsed once, with errors
that name the option."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from values.domain import MAX_IMAGE_CHARS, image_problem

DEFAULT_RESOURCES = {"nvidia.com/gpu": "nvidia-gpu", "huawei.com/Ascend910": "ascend910"}


class OptionError(ValueError):
    pass


@dataclass(frozen=True)
class KubeOptions:
    namespace: str | None = None  # None: the service account's namespace in-cluster, else "default"
    image: str = "python:3.11-slim"
    # Extended resource -> the flavor its nodes get when no label names one.
    resources: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    flavor_label: str = "trainpool.io/flavor"
    product_label: str = "nvidia.com/gpu.product"
    # GPU product label value -> flavor (e.g. NVIDIA-H100-80GB-HBM3=h100).
    products: dict[str, str] = field(default_factory=dict)
    zone_label: str = "topology.kubernetes.io/zone"
    spine_label: str = "trainpool.io/spine"
    rack_label: str = "trainpool.io/rack"
    nvlink_label: str = "trainpool.io/nvlink-domain"
    checkpoint_pvc: str | None = None
    master_port: int = 29500
    cluster_domain: str = "cluster.local"
    service_account: str | None = None
    # Server-side watch timeout; watches are re-opened from the last resourceVersion.
    watch_seconds: int = 60
    # How long inventory() waits for the first node list before failing the cycle.
    sync_seconds: float = 30.0
    # How long a non-zero exit waits for its gang's node to be found lost (gang_phase):
    # the node controller marks a silent node NotReady after node-monitor-grace-period
    # (40 s by default before Kubernetes 1.32, 50 s since), and a peer's collective fails
    # long before that. Clusters with a shorter grace period can shorten it.
    correlation_window: float = 55.0


_KEYS = {
    "namespace", "image", "resources", "flavor_label", "product_label", "products", "zone_label",
    "spine_label", "rack_label", "nvlink_label", "checkpoint_pvc", "master_port", "cluster_domain",
    "service_account", "watch_seconds", "sync_seconds", "correlation_window",
}  # fmt: skip
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def parse_options(raw: dict[str, str]) -> KubeOptions:
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise OptionError(
            f"--backend-opt {unknown[0]}: not an option of the kubernetes backend"
            f" (known: {', '.join(sorted(_KEYS))})"
        )
    values: dict[str, object] = {}
    for key, text in raw.items():
        if key in ("resources", "products"):
            values[key] = _mapping(key, text)
        elif key in ("master_port", "watch_seconds"):
            values[key] = _int(key, text, 1, 65535 if key == "master_port" else 3600)
        elif key in ("sync_seconds", "correlation_window"):
            values[key] = _float(key, text)
        elif key in ("namespace", "checkpoint_pvc", "service_account"):
            if not _DNS_LABEL.match(text) and not (
                key != "namespace" and re.match(r"^[a-z0-9.-]{1,253}$", text)
            ):
                raise OptionError(f"--backend-opt {key}: '{text}' is not a valid Kubernetes name")
            values[key] = text
        elif key == "image":
            # The rule a job's own `image:` follows (values.domain.image_problem).
            if (problem := image_problem(text)) is not None or len(text) > MAX_IMAGE_CHARS:
                raise OptionError(f"--backend-opt image: {problem or 'too long'}")
            values[key] = text
        else:
            if not text:
                raise OptionError(f"--backend-opt {key}: must not be empty")
            values[key] = text
    return KubeOptions(**values)  # type: ignore[arg-type]


def _mapping(key: str, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value:
            raise OptionError(f"--backend-opt {key}: '{item}' is not NAME=FLAVOR (items are comma-separated)")
        out[name] = value
    if not out:
        raise OptionError(f"--backend-opt {key}: give at least one NAME=FLAVOR")
    return out


def _int(key: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"--backend-opt {key}: '{text}' is not a whole number") from None
    if not low <= value <= high:
        raise OptionError(f"--backend-opt {key}: {value} is outside {low}..{high}")
    return value


def _float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"--backend-opt {key}: '{text}' is not a number") from None
    if not 0 < value <= 3600:
        raise OptionError(f"--backend-opt {key}: {value} is outside (0, 3600]")
    return value
