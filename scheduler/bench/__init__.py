"""Benchmarks of the scheduler itself (`trainpool bench ...`)."""
