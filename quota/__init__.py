"""Organizations, quotas and fair-share arithmetic. Pure: no I/O, no clock."""
