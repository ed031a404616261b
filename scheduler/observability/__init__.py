"""Prometheus alert rules and Grafana dashboards, as code.

``python -m scheduler.observability`` writes them to ``deploy/`` and into the Helm chart
(``charts/trainpool/files/``); ``--check`` fails when those files are stale.
"""
