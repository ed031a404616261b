#!/usr/bin/env bash
# The main job: the whole pool on this machine, shown working.
# Sets up .venv on first use (bash .ci/run --setup-only: Debian packages, Ray, PyTorch CPU),
# then runs `trainpool demo`: a local Ray cluster of six simulated accelerator nodes, the
# server on SQLite, three orgs, a 4-replica PyTorch DDP gang that loses a node mid-training
# and resumes from its checkpoint, a reclaim by graceful preemption, a repaired node.
# Exits 0 only if every check held.
#   bash examples/demo.sh           the narrated scenario
#   bash examples/demo.sh --keep    and keep its data folder (database, checkpoints, logs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
echo "setting up .venv (first run only; see .ci/run) ..."
bash .ci/run --setup-only >/dev/null
exec "${ROOT}/.venv/bin/trainpool" demo "$@"
