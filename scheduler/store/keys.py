"""Key lists for ``IN (...)`` with a bounded number of statement shapes.

Every length of an ``IN`` list renders a different SQL text, and the drivers cache
prepared statements per text (Python's sqlite3 keeps 128 per connection; psycopg
prepares a text on the server after five runs). Lists of every length from 1 to 500,
as the control loop makes each cycle, filled those caches with one-off statements and
evicted the hot ones: in the soak the SQLite statement caches alone held ~8 MiB that
grew with the number of jobs seen. Padding a list to the next power of two (with its
last key again, which changes nothing for ``IN``) leaves about ten shapes per query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement
from sqlmodel import col


def padded(keys: Iterable[Any]) -> list[Any]:
    """``keys`` repeated at the end up to the next power of two in length."""
    out = list(keys)
    if len(out) > 1:
        out.extend([out[-1]] * ((1 << (len(out) - 1).bit_length()) - len(out)))
    return out


def among(column: Any, keys: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN keys``, in one of a few statement shapes whatever the number of keys."""
    return col(column).in_(padded(keys))
