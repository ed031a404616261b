"""Server-side health of nodes and links from agent reports (issue 6).

Pure parts: ``thresholds`` (the numbers), ``hysteresis`` (state over time), ``mesh``
(per-pair windows and baselines), ``localize`` (node vs rack vs link from one
snapshot), ``peers`` (who probes whom), ``model`` (all of it per evaluation tick).
``service`` is the only module that reads and writes the store; ``metrics`` the
Prometheus side.
"""
