#!/usr/bin/env bash
# The walk-through: a busy two-rack pool, seven new jobs, six decision cycles.
# Sets up .venv on first use (bash .ci/run --setup-only), then runs `trainpool plan`.
#   bash examples/walkthrough.sh            tables
#   bash examples/walkthrough.sh -o json    the same decisions as JSON (or -o yaml)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash .ci/run --setup-only >/dev/null
TRAINPOOL="${ROOT}/.venv/bin/trainpool"

if [[ $# -eq 0 ]]; then
    cat <<'TEXT'
== The pool (examples/pools/small.yaml): 6 H100 + 4 Ascend 910B nodes in two racks,
   orgs vision, nlp and research (research has no guarantee and only borrows).
== Already running (examples/state/small-busy.yaml): six jobs; research borrows 16 Ascend
   of the 24 that nlp and vision lend.
== New jobs (examples/jobs/walkthrough/), submitted in file order. Watch for:
   - vit-pretrain: within vision's quota, but no two whole H100 nodes are free and nobody
     borrows H100 -> a reservation: the nodes it holds and when it will start;
   - smaller jobs that run ahead of it only where they do not delay it (backfill), and
     borrowed capacity taken back (reclaim) when an org needs its guarantee;
   - pangu-pretrain: nlp takes its Ascend quota back -> research's job is preempted;
   - a reason for every job that waits; vit-giant rejected: it can never fit.
TEXT
    "$TRAINPOOL" validate examples/pools/small.yaml examples/jobs/walkthrough examples/state/small-busy.yaml \
        --pool examples/pools/small.yaml
fi
exec "$TRAINPOOL" plan --pool examples/pools/small.yaml --running examples/state/small-busy.yaml \
    --jobs examples/jobs/walkthrough --steps 6 "$@"
