"""How a single-run method report words a paper's claim. One run is one seed with no interval, so
its result is a direction, never a verdict: "holds" and "does not hold" are kept for claims with
their seed count and a paired bootstrap interval (``exitflow compare --profile standard``,
``tasks.reports.claims``), where an interval that contains 0 reads "no difference detected"."""

from __future__ import annotations

ONE_SEED = "one seed, no interval: no difference is claimed"
TESTED_BY_COMPARE = "`exitflow compare --profile standard` tests it with seeds and intervals"  # encoder methods only


def direction(holds: bool | None, unreadable: str = "cannot be read") -> str:
    """``holds`` (the single run's margin has the paper's sign; None: not readable) as words."""
    if holds is None:
        return unreadable
    return "in the paper's direction" if holds else "against the paper's direction"
