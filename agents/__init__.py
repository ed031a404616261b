"""Node agents: probes, exporter and reports (see issue 6)."""
