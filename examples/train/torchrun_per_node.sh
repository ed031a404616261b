#!/bin/sh
# One torchrun per pool replica, for a job that runs several processes per node.
#
# The pool starts one replica per node (gang.replicas: the number of nodes;
# gang.accelerators: the node's devices) with RANK (the node's rank among the replicas),
# WORLD_SIZE (the replicas), MASTER_ADDR, MASTER_PORT and the TRAINPOOL_* variables.
# torchrun starts NPROC processes here (the job's env; 1 if unset) and numbers RANK and
# WORLD_SIZE across all of them. TRAINPOOL_* pass through, so every process checkpoints,
# resumes and reports progress through the SDK: under its global rank, on this node
# (TRAINPOOL_NODE). A resize or a restart is a new attempt with new RANK/WORLD_SIZE; the
# pool passes the checkpoint to resume from as for any job.
#
#   command: [sh, examples/train/torchrun_per_node.sh, examples/train/ddp_train.py, --steps, "200"]
#   env: {NPROC: "8"}
set -eu
exec python -m torch.distributed.run \
    --nnodes="$WORLD_SIZE" --node-rank="$RANK" --nproc-per-node="${NPROC:-1}" \
    --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" "$@"
