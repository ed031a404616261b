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
   - vit-pretrain: within vision's quota, but only one whole H100 node is free and nobody
     borrows H100 -> a reservation (nodes and start time), status "reserved";
   - vit-eval and sft-7b: run ahead of it (backfill) on nodes the reservation does not need;
     sft-7b runs on borrowed quota, so a few steps later vit-pretrain reclaims it;
   - pangu-pretrain: nlp takes its Ascend quota back -> research's job is preempted;
   - hparam-sweep and eval-harness wait (no idle quota to borrow); vit-giant is rejected.
TEXT
    "$TRAINPOOL" validate examples/pools/small.yaml examples/jobs/walkthrough examples/state/small-busy.yaml \
        --pool examples/pools/small.yaml
fi
exec "$TRAINPOOL" plan --pool examples/pools/small.yaml --running examples/state/small-busy.yaml \
    --jobs examples/jobs/walkthrough --steps 6 "$@"
