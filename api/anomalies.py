"""Hourly outlier detection with a robust z-score (pure functions).

For each hour, its value (order count or revenue) is compared with the same measure over the
trailing ``baseline_hours`` hours before it (hours without events count as zero, but hours
before the tenant's first event are not history: a new tenant is not scored against a zero
past)::

    z = 0.6745 * (x - median) / MAD        (MAD: median absolute deviation of the baseline)

0.6745 makes MAD comparable with a standard deviation for normal data, and median and MAD are
not dragged along by the outliers they are meant to find (Iglewicz and Hoaglin's modified
z-score; |z| >= 3.5 is their suggested cut-off). When MAD is 0 (a flat baseline), the mean
absolute deviation stands in (scaled by 0.7979, its normal-data ratio to the standard
deviation); when that is 0 too, no score is defined and the hour is not flagged.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_SCALE = 0.6745
MEAN_AD_SCALE = 0.7979


@dataclass(frozen=True)
class Outlier:
    """One hour whose value lies far from its trailing baseline."""

    index: int  # position in the input series
    value: float
    baseline_median: float
    z_score: float


def robust_z(value: float, baseline: Sequence[float]) -> float | None:
    """The modified z-score of ``value`` against ``baseline``, or None when undefined."""
    if not baseline:
        return None
    median = statistics.median(baseline)
    mad = statistics.median(abs(v - median) for v in baseline)
    if mad > 0:
        return MAD_SCALE * (value - median) / mad
    mean_ad = statistics.fmean(abs(v - median) for v in baseline)
    if mean_ad > 0:
        return MEAN_AD_SCALE * (value - median) / mean_ad
    return None


def hourly_outliers(
    values: Sequence[float],
    first: int,
    baseline_hours: int,
    threshold: float,
    history_from: int = 0,
) -> list[Outlier]:
    """Outliers among ``values[first:]``, each scored against the hours just before it.

    ``values`` is one value per consecutive hour; the ``first`` hours are history only, and
    hours before ``history_from`` (before the tenant existed) are not history at all.
    Hours with fewer than ``baseline_hours // 2`` hours of history are not scored.
    """
    found: list[Outlier] = []
    for index in range(first, len(values)):
        baseline = values[max(history_from, index - baseline_hours) : index]
        if len(baseline) < baseline_hours // 2:
            continue
        z = robust_z(values[index], baseline)
        if z is not None and abs(z) >= threshold:
            found.append(Outlier(index, values[index], statistics.median(baseline), z))
    return found
