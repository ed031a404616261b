"""Tenant quota files: node counts per tenant, turned into accelerators by the pool's node size.

Accepted headers: ``vc,node num`` (the Helios artifact of Philly) or ``org,nodes``.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.sim.trace import TraceError, csv_rows

_HEADERS = (("vc", "node num"), ("org", "nodes"))


def load_quotas(path: Path) -> dict[str, int]:
    """Nodes per tenant, in file order."""
    if not path.is_file():
        raise TraceError(f"--quotas: {path} does not exist or is not a file")
    with path.open() as fh:
        header = [h.strip() for h in fh.readline().split(",")]
    for org_col, nodes_col in _HEADERS:
        if org_col in header and nodes_col in header:
            break
    else:
        found = ", ".join(header)
        raise TraceError(f"{path}: expected columns 'vc,node num' or 'org,nodes' (found: {found})")
    quotas: dict[str, int] = {}
    for line, row in csv_rows(path, (org_col, nodes_col)):
        org = row[org_col].strip().lower()
        raw = (row[nodes_col] or "").strip()
        if not org:
            raise TraceError(f"{path}:{line}: {org_col} must not be empty")
        if not raw.isdigit():
            raise TraceError(f"{path}:{line}: {nodes_col}: must be a whole number >= 0 (got '{raw}')")
        if org in quotas:
            raise TraceError(f"{path}:{line}: {org_col}: '{org}' appears twice")
        quotas[org] = int(raw)
    if not quotas:
        raise TraceError(f"{path}: the quota file has no rows")
    return quotas
