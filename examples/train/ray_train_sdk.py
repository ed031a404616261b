"""The pool's SDK from inside Ray Train: a TorchTrainer whose workers checkpoint where
the pool says, report checkpoints and progress through the SDK (each worker its own
step, under its Ray Train rank), and resume from the pool's checkpoint.

The pool's variables (TRAINPOOL_*) are in this driver's environment; Ray Train's
workers are other processes, so the driver passes ``sdk.Context`` in the loop config.

    python examples/train/ray_train_sdk.py --steps 20 --workers 2

Ray Train keeps its own checkpointing if you use it; the pool still restarts the whole
job from the checkpoint reported here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from scheduler import sdk


def train_loop(config: dict[str, Any]) -> None:
    ctx = sdk.Context(**config["trainpool"])
    rank = sdk.rank()
    start = 0
    if (resume := sdk.resume_from(ctx)) is not None:
        with open(resume) as f:
            start = int(json.load(f)["step"]) + 1
    total = torch.zeros(1)
    for step in range(start, config["steps"]):
        t = torch.ones(1)
        dist.all_reduce(t)  # the workers really form one process group
        total += t
        sdk.report_progress(step, ctx=ctx, every=config["progress_every"])
        if (step + 1) % 5 == 0 or step == config["steps"] - 1:
            if rank == 0:
                path = sdk.checkpoint_dir(ctx) / f"ray-train-{step:04d}.json"
                path.write_text(json.dumps({"step": step, "start": start, "world": int(t.item())}))
            sdk.report_checkpoint(step, sdk.checkpoint_dir(ctx) / f"ray-train-{step:04d}.json", ctx=ctx)
    if rank == 0:
        print(f"ray-train started at step {start}, world {int(t.item())}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress writes")
    args = p.parse_args()
    ray.init(num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=False)
    config = {"steps": args.steps, "progress_every": args.progress_every}
    config["trainpool"] = sdk.Context.from_env().as_dict()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=False),
    )
    trainer.fit()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
