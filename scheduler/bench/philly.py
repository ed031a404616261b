"""The gang-size mix of Microsoft's Philly trace, as a table so the benchmark runs anywhere.

Of the trace's 111,549 GPU jobs (Jeon et al., "Analysis of Large-Scale Multi-Tenant GPU
Clusters for DNN Training Workloads", USENIX ATC 2019), the share that asked for each GPU
count. The shares sum to 99.985% (the rest are odd sizes); the sampler normalises them.
"""

from __future__ import annotations

import numpy as np

from values.domain import Gang

PHILLY_GPU_MIX: tuple[tuple[int, float], ...] = (
    (1, 0.867),
    (2, 0.023),
    (4, 0.049),
    (8, 0.051),
    (16, 0.0076),
    (32, 0.0019),
    (64, 0.00025),
    (128, 0.0001),
)

ACCELERATORS_PER_NODE = 8


def philly_probabilities() -> tuple[np.ndarray, np.ndarray]:
    """GPU counts and their normalised probabilities."""
    sizes = np.array([size for size, _ in PHILLY_GPU_MIX], dtype=np.int64)
    shares = np.array([share for _, share in PHILLY_GPU_MIX], dtype=np.float64)
    return sizes, shares / shares.sum()


def sample_gpu_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` job sizes (GPUs per job) drawn from the Philly mix."""
    sizes, probs = philly_probabilities()
    return rng.choice(sizes, size=n, p=probs)


def gang_shape(gpus: int) -> tuple[int, int]:
    """(replicas, accelerators per replica): jobs above one node are gangs of full nodes."""
    if gpus <= ACCELERATORS_PER_NODE:
        return 1, gpus
    if gpus % ACCELERATORS_PER_NODE:
        raise ValueError(f"gpus: {gpus} is not a multiple of {ACCELERATORS_PER_NODE}")
    return gpus // ACCELERATORS_PER_NODE, ACCELERATORS_PER_NODE


def gang_for(gpus: int, flavors: tuple[str, ...]) -> Gang:
    replicas, accelerators = gang_shape(gpus)
    # CPU and memory scale with the accelerators so that they rarely bind before them,
    # as on real training nodes (12 cores and 160 GB per accelerator here).
    return Gang(
        replicas=replicas,
        accelerators=accelerators,
        flavors=flavors,
        cpu=12.0 * accelerators,
        memory_gb=160.0 * accelerators,
    )
