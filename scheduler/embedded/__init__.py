"""The embedded pool: a local Ray cluster of simulated accelerator nodes, the server on
SQLite and the control loop, in one process (``trainpool up``), and the scripted
scenario that shows it working (``trainpool demo``)."""
