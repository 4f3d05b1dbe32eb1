#!/usr/bin/env python3
"""Fixtures for the drift statistics (src/drift/stats.rs): reference
shares and live counts on the same bins, and what numpy and scipy make of
them. Writes tests/fixtures/drift/cases.json; CI only reads it.

  pip install numpy scipy
  python3 scripts/parity/drift_fixtures.py
"""
import json
import pathlib

import numpy as np
import scipy
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, wasserstein_distance

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "drift"
EPS = 1e-4


def case(rng, bins, shift, empty_bin):
    reference = rng.normal(0.0, 1.0, 5000)
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1))
    ref_counts = np.histogram(np.clip(reference, edges[0], edges[-1]), edges)[0]
    live = rng.normal(shift, 1.2, 3000)
    live_counts = np.histogram(np.clip(live, edges[0], edges[-1]), edges)[0]
    if empty_bin:
        live_counts[0] = 0
    p = ref_counts / ref_counts.sum()
    q = live_counts / live_counts.sum()
    pe, qe = np.maximum(p, EPS), np.maximum(q, EPS)
    centres = (edges[:-1] + edges[1:]) / 2
    expected_cat = np.array([0.5, 0.3, 0.2])
    observed_cat = rng.multinomial(1000, [0.45, 0.35, 0.2])
    return {
        "edges": edges.tolist(),
        "reference_shares": p.tolist(),
        "reference_std": float(reference.std()),
        "live_counts": live_counts.tolist(),
        "psi": float(np.sum((qe - pe) * np.log(qe / pe))),
        "ks": float(np.max(np.abs(np.cumsum(p) - np.cumsum(q)))),
        "jensen_shannon": float(jensenshannon(p, q)),
        "wasserstein": float(wasserstein_distance(centres, centres, p, q) / reference.std()),
        "category_reference": expected_cat.tolist(),
        "category_counts": observed_cat.tolist(),
        "chi_square": float(chisquare(observed_cat, expected_cat * observed_cat.sum()).statistic),
    }


def discrete_case(rng, values, reference_p, live_p, n):
    """A flag or a band: one bin per value, from the values themselves."""
    reference = rng.choice(values, 5000, p=reference_p)
    live = rng.choice(values, n, p=live_p)
    p = np.array([np.sum(reference == v) for v in values]) / len(reference)
    q = np.array([np.sum(live == v) for v in values]) / len(live)
    pe, qe = np.maximum(p, EPS), np.maximum(q, EPS)
    return {
        "reference": reference.tolist(),
        "live": live.tolist(),
        "psi": float(np.sum((qe - pe) * np.log(qe / pe))),
        "ks": float(np.max(np.abs(np.cumsum(p) - np.cumsum(q)))),
        "jensen_shannon": float(jensenshannon(p, q)),
    }


def main():
    rng = np.random.default_rng(11)
    cases = [case(rng, 10, 0.0, False), case(rng, 10, 0.5, False), case(rng, 20, 1.0, True)]
    # The drift issue's flag (ones from 0.5 to 0.35) and 4-valued band.
    discrete_rng = np.random.default_rng(12)
    discrete = [
        discrete_case(discrete_rng, [0.0, 1.0], [0.5, 0.5], [0.65, 0.35], 3000),
        discrete_case(
            discrete_rng, [10.0, 30.0, 50.0, 70.0], [0.4, 0.3, 0.2, 0.1], [0.2, 0.3, 0.2, 0.3], 3000
        ),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    fixture = {"numpy": np.__version__, "scipy": scipy.__version__, "cases": cases, "discrete": discrete}
    (OUT / "cases.json").write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main()
