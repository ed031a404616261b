"""Trace-driven simulator: replays workloads through the same ``decide`` as the service."""
