"""Backends: where gangs really run (ray, kubernetes) or pretend to (sim)."""
