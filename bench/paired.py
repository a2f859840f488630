"""What every comparison in bench/ reports: ratios taken per pair, as median with min and max, and the load."""

from __future__ import annotations

import os
import statistics


def spread(values: list[float]) -> dict:
    """Median with min and max, and how many values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def loadavg() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages, recorded at a run's start and end."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
