"""Probes of the node's own hardware: NIC counters, InfiniBand port counters, GPUs.

Each reads raw values in one small function and parses them in pure ones, tested on
recorded samples (tests/agents/data/).
"""
