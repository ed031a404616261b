"""Strict scalar types for what users write: ``"replicas": true``, ``"accelerators": "2"``
and ``"preemptible": "yes"`` are errors, not silently converted values. A float field
still takes a whole number (``max_runtime_seconds: 3600``), but not infinity or NaN.

Integers are also bounded by what both stores hold (a signed 64-bit column): a value
past it would be a 500 from the database instead of a 422 naming the field.
"""

from typing import Annotated

from pydantic import AllowInfNan, Field, Strict

INT64_MAX = 2**63 - 1

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
# Finite: JSON as Python parses it has Infinity and NaN, which compare as nothing should.
Number = Annotated[float, Strict(), AllowInfNan(False)]
# A counter or sequence number with no smaller natural bound.
Count = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
