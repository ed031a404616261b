"""One Ray node (head or worker) for a namespace, started the way LocalRayCluster starts
its nodes (the ``ray start`` of this Ray has no ``--labels``), then held until killed.

    ray_node.py --head --ip 10.231.250.2 --port 6390 --temp /tmp/tpnr-x
    ray_node.py --ip 10.231.1.10 --gcs 10.231.250.2:6390 --temp /tmp/tpnr-x --node h-00 --rack h-s0-r0

Everything it starts lives in the namespace; the tests remove it with the namespace's
processes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from scheduler.backends.ray.labels import accel_resource, labels_for
from values.domain import Node, TopologyPath


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--head", action="store_true")
    ap.add_argument("--ip", required=True)
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--gcs")
    ap.add_argument("--temp", required=True)
    ap.add_argument("--node")
    ap.add_argument("--rack", default="rack-0")
    ap.add_argument("--spine", default="spine-0")
    args = ap.parse_args()

    import ray._private.node
    from ray._private.parameter import RayParams

    common = {
        "temp_dir": args.temp, "num_gpus": 0, "object_store_memory": 80 * 1024 * 1024, "min_worker_port": 0,
        "max_worker_port": 0, "node_ip_address": args.ip,
    }  # fmt: skip
    if args.head:
        params = RayParams(num_cpus=0, include_dashboard=False, gcs_server_port=args.port, **common)
    else:
        node = Node(name=args.node, flavor="h100", accelerators=8,
                    topology=TopologyPath(rack=args.rack, spine=args.spine))  # fmt: skip
        params = RayParams(
            num_cpus=1, resources={accel_resource("h100"): 8.0}, labels=labels_for(node),
            gcs_address=args.gcs, include_log_monitor=False, node_manager_port=0, **common,
        )  # fmt: skip
        params.dashboard_agent_listen_port = None
    ray._private.node.Node(params, head=args.head, shutdown_at_exit=False, spawn_reaper=True)
    print("ray node up", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
