"""A single-process job in plain Python that uses the pool's SDK: counts steps, keeps
its state in a JSON checkpoint, resumes from it, and on SIGTERM (a preemption, a move,
a cancel) saves and leaves within its grace period.

    python examples/train/steady_worker.py --steps 0 --step-seconds 0.5 --checkpoint-every 4

Prints ``resumed from step K`` or ``starting at step 0``, then ``step N``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scheduler import sdk


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=0, help="steps to run; 0 runs until stopped")
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--checkpoint-every", type=int, default=4)
    args = p.parse_args()
    sdk.install_sigterm_hook()
    folder = sdk.checkpoint_dir()
    step = 0
    if (resume := sdk.resume_from()) is not None:
        with open(resume) as f:
            step = int(json.load(f)["step"]) + 1
        print(f"resumed from step {step - 1}", flush=True)
    else:
        print("starting at step 0", flush=True)

    def save(at: int) -> None:
        path = folder / f"state-{at:06d}.json"
        path.write_text(json.dumps({"step": at}))
        sdk.report_checkpoint(at, path)
        print(f"checkpoint step {at}", flush=True)

    while args.steps == 0 or step < args.steps:
        time.sleep(args.step_seconds)
        print(f"step {step}", flush=True)
        if sdk.should_stop():
            save(step)
            print("stopping on SIGTERM", flush=True)
            return 0
        if (step + 1) % args.checkpoint_every == 0:
            save(step)
        step += 1
    save(step - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
