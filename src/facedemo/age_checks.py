"""Age checks, "is this person at least T years old": the error rates by which age-assurance
systems are judged at a threshold T (age_thresholds.py says which T may be asked for).

The probability itself is `age_distribution.probability_over` of the pooled age distribution;
this module measures the answers against true ages:
- minors passed: the share of people under T whose P(age >= T) is at least 0.5;
- adults refused: the share of people of T or more whose P(age >= T) is under 0.5;
- the challenge threshold: the smallest p that passes at most 1% of the people under T (P >= p),
  and the share of people of T or more it refuses, with bootstrap intervals;
- calibration: expected calibration error over 10 equal-width bins and the Brier score.
Pure numpy; `facedemo evaluate` reports these per T, by true-age band and by race.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "age_bands",
    "age_check_figures",
    "brier_score",
    "challenge_threshold",
    "expected_calibration_error",
]

DECISION_P = 0.5  # a check passes when P(age >= T) is at least this
MINORS_PASSED_TARGET = 0.01  # what the challenge threshold keeps the minors passed at or under
CALIBRATION_BINS = 10
BOOTSTRAP_SAMPLES = 200


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    """Sum over 10 equal-width bins of P of (share of faces in the bin) x |mean P - share true|."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    bins = np.minimum((probabilities * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    error = 0.0
    for b in range(CALIBRATION_BINS):
        inside = bins == b
        if inside.any():
            gap = abs(probabilities[inside].mean() - outcomes[inside].mean())
            error += inside.mean() * gap
    return float(error)


def brier_score(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    """Mean squared difference between P and the 0/1 outcome."""
    return float(np.mean((np.asarray(probabilities) - np.asarray(outcomes)) ** 2))


def _reliability(probabilities: np.ndarray, outcomes: np.ndarray) -> list[dict[str, Any]]:
    """Per bin of P: faces, mean P and the share that are at least T (a reliability plot)."""
    bins = np.minimum((probabilities * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    rows = []
    for b in range(CALIBRATION_BINS):
        inside = bins == b
        if inside.any():
            rows.append(
                {
                    "bin": f"{b / CALIBRATION_BINS:.1f}-{(b + 1) / CALIBRATION_BINS:.1f}",
                    "n": int(inside.sum()),
                    "mean_p": round(float(probabilities[inside].mean()), 4),
                    "share_over": round(float(outcomes[inside].mean()), 4),
                }
            )
    return rows


def challenge_threshold(probabilities: np.ndarray, over: np.ndarray) -> tuple[float, float]:
    """The smallest p at which at most 1% of the people under T (`over` False) have P >= p, and
    the share of the people of T or more with P < p, whom that p refuses. (0, 0) without minors."""
    minors = np.sort(probabilities[~over])
    adults = probabilities[over]
    if minors.size == 0:
        return 0.0, 0.0
    allowed = int(np.floor(MINORS_PASSED_TARGET * minors.size))  # minors that may pass
    # Passing P >= p: p just above the (allowed + 1)-th highest minor's P lets `allowed` pass.
    p = float(np.nextafter(minors[minors.size - allowed - 1], np.inf))
    refused = float(np.mean(adults < p)) if adults.size else 0.0
    return min(p, 1.0), refused


def _rates(probabilities: np.ndarray, over: np.ndarray) -> dict[str, Any]:
    passed = probabilities >= DECISION_P
    minors, adults = ~over, over
    return {
        "n_under": int(minors.sum()),
        "n_over": int(adults.sum()),
        "minors_passed": _share(passed[minors]),
        "adults_refused": _share(~passed[adults]),
    }


def _share(values: np.ndarray) -> float | None:
    return None if values.size == 0 else round(float(np.mean(values)), 4)


def age_check_figures(
    probabilities: np.ndarray,
    true_ages: np.ndarray,
    threshold: int,
    groups: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every figure of the module docstring for one threshold, over faces of known age.

    `groups` maps a group name (a true-age band, a race) to a boolean mask of the faces in it;
    each gets its minors passed and adults refused at p = 0.5 and at the challenge threshold.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    over = np.asarray(true_ages) >= threshold
    p, refused = challenge_threshold(probabilities, over)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(BOOTSTRAP_SAMPLES):
        rows = rng.integers(0, len(probabilities), len(probabilities))
        samples.append(challenge_threshold(probabilities[rows], over[rows]))
    p_low, p_high = np.percentile([s[0] for s in samples], [2.5, 97.5])
    r_low, r_high = np.percentile([s[1] for s in samples], [2.5, 97.5])
    figures: dict[str, Any] = {
        "threshold": threshold,
        **_rates(probabilities, over),
        "ece": round(expected_calibration_error(probabilities, over), 4),
        "brier": round(brier_score(probabilities, over), 4),
        "challenge": {
            "p": round(p, 4),
            "p_interval": [round(float(p_low), 4), round(float(p_high), 4)],
            "adults_refused": round(refused, 4),
            "adults_refused_interval": [round(float(r_low), 4), round(float(r_high), 4)],
        },
        "reliability": _reliability(probabilities, over),
    }
    by_group = {}
    for name, mask in (groups or {}).items():
        if mask.any():
            rates = _rates(probabilities[mask], over[mask])
            challenged = probabilities[mask] >= p
            rates["minors_passed_at_challenge"] = _share(challenged[~over[mask]])
            rates["adults_refused_at_challenge"] = _share(~challenged[over[mask]])
            by_group[name] = rates
    figures["groups"] = by_group
    return figures


def age_bands(true_ages: np.ndarray, edges: Sequence[int]) -> dict[str, np.ndarray]:
    """Masks of the true-age bands between `edges` (e.g. 0-12, 13-17, ...), the last open."""
    bands = {}
    for index, low in enumerate(edges):
        if index + 1 < len(edges):
            high = edges[index + 1]
            bands[f"{low}-{high - 1}"] = (true_ages >= low) & (true_ages < high)
        else:
            bands[f"{low}+"] = true_ages >= low
    return bands
