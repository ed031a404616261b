"""trainpool: the scheduler of a shared pool of accelerator nodes for gang training jobs."""

__version__ = "0.1.0"
