"""A real PyTorch DDP training job for the pool: a small regression model on data it
generates, checkpointing every few steps and resuming from the pool's checkpoint.

Runs as one process per replica; the pool sets RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT and the TRAINPOOL_* variables. Uses NCCL on GPUs when the flavor's devices
are visible (CUDA available), else gloo on the CPU.

    python examples/train/ddp_train.py --steps 200 --checkpoint-every 10

Progress lines (rank 0): ``step N loss X``; ``resumed from step K`` or ``starting at step 0``.
Each attempt's first and last steps are appended to ``progress.log`` in the checkpoint
folder, so a test can check that a restarted job continued instead of starting over.

Every rank reports each step to the pool (``sdk.report_progress``) with its own compute
time: the forward pass, up to DDP's first all-reduce (which runs in backward, where a
fast rank waits for a slow one). That is how the pool tells a slow rank from its peers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scheduler import sdk


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="total optimisation steps")
    p.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints")
    p.add_argument("--step-seconds", type=float, default=0.0, help="extra sleep per step (demos)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--fail-at-step", type=int, default=-1, help="exit 3 at this step (tests)")
    p.add_argument(
        "--hang-at-step",
        type=int,
        default=-1,
        help="in the first attempt, rank --hang-rank stops stepping at this step (tests)",
    )
    p.add_argument("--hang-rank", type=int, default=0)
    p.add_argument(
        "--progress-every", type=float, default=sdk.PROGRESS_EVERY, help="seconds between progress writes"
    )
    p.add_argument("--slow-node", default="", help="a rank on this pool node computes slower (tests)")
    p.add_argument("--slow-seconds", type=float, default=0.0, help="its extra compute time per step")
    return p.parse_args()


def model_for(device: torch.device) -> nn.Module:
    torch.manual_seed(0)  # every rank starts from the same weights
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)


def batch(step: int, rank: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic synthetic data: y = sum(x * w_true) + noise, a different shard per rank."""
    g = torch.Generator().manual_seed(step * 1009 + rank)
    x = torch.randn(size, 16, generator=g)
    w = torch.linspace(-1, 1, 16)
    y = (x * w).sum(dim=1, keepdim=True) + 0.01 * torch.randn(size, 1, generator=g)
    return x.to(device), y.to(device)


def main() -> int:
    args = parse()
    sdk.install_sigterm_hook()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and os.environ.get("TRAINPOOL_FORCE_CPU") != "1"
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    model = model_for(device)
    ddp = DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    ckdir = sdk.checkpoint_dir()
    attempt = os.environ.get("TRAINPOOL_ATTEMPT", "0")

    start = 0
    resume = sdk.resume_from()
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start = int(state["step"]) + 1
    if rank == 0:
        print(f"resumed from step {start - 1}" if resume else "starting at step 0", flush=True)
        print(f"backend {backend} world {world} attempt {attempt}", flush=True)

    def save(step: int) -> None:
        if rank == 0:
            path = ckdir / f"step-{step:06d}.pt"
            tmp = path.with_suffix(".tmp")
            torch.save({"step": step, "model": model.state_dict(), "optim": opt.state_dict()}, tmp)
            os.replace(tmp, path)
            sdk.report_checkpoint(step, path)
            print(f"checkpoint step {step}", flush=True)

    loss_fn = nn.MSELoss()
    step = start - 1
    slow = args.slow_seconds if args.slow_node and os.environ.get("TRAINPOOL_NODE") == args.slow_node else 0.0
    for step in range(start, args.steps):
        if step == args.fail_at_step:
            print(f"failing on purpose at step {step}", file=sys.stderr, flush=True)
            return 3
        if step == args.hang_at_step and rank == args.hang_rank and attempt == "0":
            print(f"rank {rank} hangs on purpose at step {step}", file=sys.stderr, flush=True)
            while True:  # like a collective that never returns: deaf to SIGTERM's flag
                time.sleep(3600)
        began = time.perf_counter()
        x, y = batch(step, rank, args.batch, device)
        opt.zero_grad()
        out = ddp(x)
        if slow:
            time.sleep(slow)  # a slow device: more compute time before the collective
        computed = time.perf_counter() - began
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        if rank == 0:
            print(f"step {step} loss {loss.item():.5f}", flush=True)
        if args.step_seconds:
            time.sleep(args.step_seconds)
        sdk.report_progress(step, computed + args.step_seconds, every=args.progress_every)
        if sdk.should_stop():  # every rank agrees, then all save and leave in the same step
            save(step)
            _progress(ckdir, rank, attempt, start, step, "stopped")
            _leave(world)
            return 0
        if (step + 1) % args.checkpoint_every == 0:
            save(step)
    save(step)
    _progress(ckdir, rank, attempt, start, step, "done")
    _leave(world)
    return 0


def _leave(world: int) -> None:
    """Leave the group together: a rank that exits while its peers' gloo threads still
    talk to it makes them abort ("terminate called without an active exception")."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _progress(folder: Path, rank: int, attempt: str, first: int, last: int, how: str) -> None:
    if rank == 0:
        with open(folder / "progress.log", "a") as f:
            f.write(f"attempt {attempt} first {first} last {last} {how}\n")


if __name__ == "__main__":
    sys.exit(main())
