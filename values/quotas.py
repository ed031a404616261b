"""Organizations, teams and per-flavor quotas: the inputs of fair-share arithmetic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from values.names import Name
from values.strict import Int, Number


class FlavorQuota(BaseModel):
    """One org's quota for one accelerator flavor, in accelerators.

    ``nominal`` is guaranteed: capacity within it is never taken away for fairness.
    ``borrowing_limit`` caps how far above nominal the org may go on idle capacity
    (``None``: no cap). ``lending_limit`` caps how much of the org's *unused* nominal
    others may borrow (``None``: all of it); the rest stays idle on purpose, so the
    org gets it back instantly without preempting anybody.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    nominal: Int = Field(0, ge=0, le=10_000_000)
    borrowing_limit: Int | None = Field(None, ge=0, le=10_000_000)
    lending_limit: Int | None = Field(None, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _lending_within_nominal(self) -> FlavorQuota:
        if self.lending_limit is not None and self.lending_limit > self.nominal:
            raise ValueError(f"lending_limit ({self.lending_limit}) cannot exceed nominal ({self.nominal})")
        return self

    @property
    def guaranteed_private(self) -> int:
        """The part of nominal that is never lent (nominal - lending_limit)."""
        return self.nominal - (self.nominal if self.lending_limit is None else self.lending_limit)


class Team(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    weight: Number = Field(1.0, gt=0, le=1e6)


class Org(BaseModel):
    """An organization of the pool; ``weight`` scales its fair share of idle capacity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    weight: Number = Field(1.0, gt=0, le=1e6)
    quotas: dict[Name, FlavorQuota] = Field(default_factory=dict)
    teams: tuple[Team, ...] = ()

    def quota(self, flavor: str) -> FlavorQuota:
        """The org's quota for ``flavor``; an org without a row may only borrow."""
        return self.quotas.get(flavor, _BORROW_ONLY)


_BORROW_ONLY = FlavorQuota(nominal=0)
