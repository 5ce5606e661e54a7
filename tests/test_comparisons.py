import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from tl_multineuron import MultiNeuronError
from tl_multineuron.experiments.comparisons import (
    mcnemar_exact,
    paired_bootstrap,
    paired_comparisons,
)


def test_mcnemar_by_hand_and_against_scipy():
    # 5 rows A right / B wrong, 1 row the other way: p = 2 * P(X <= 1 | n=6, 1/2) = 14/64
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0], bool)
    assert mcnemar_exact(a, b) == pytest.approx(14 / 64)
    assert mcnemar_exact(a, a) == 1.0  # no discordant pairs
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.random(40) < 0.5, rng.random(40) < 0.3
        n01, n10 = int((x & ~y).sum()), int((~x & y).sum())
        want = sps.binomtest(n01, n01 + n10, 0.5).pvalue if n01 + n10 else 1.0
        assert mcnemar_exact(x, y) == pytest.approx(want)
    with pytest.raises(MultiNeuronError):
        mcnemar_exact(a, b[:3])


def test_bootstrap_by_hand():
    items = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([[1.0, 0, 1, 1, 0, 1]])
    b = np.array([[0.0, 0, 1, 0, 0, 1]])
    d = paired_bootstrap(a, b, items, n_boot=4000)
    assert d.value == pytest.approx(4 / 6) and d.reference_value == pytest.approx(2 / 6)
    assert d.delta == pytest.approx(2 / 6)
    # item-level deltas are 1/2, 1/2, 0: resampled means lie in [0, 1/2]
    assert 0.0 <= d.ci_low <= d.delta <= d.ci_high <= 0.5 + 1e-12
    # exhaustive bootstrap over the 27 equally likely item draws: 2.5% / 97.5% quantiles
    deltas = [0.5, 0.5, 0.0]
    draws = [
        np.mean([deltas[i], deltas[j], deltas[k]])
        for i in range(3)
        for j in range(3)
        for k in range(3)
    ]
    lo, hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    assert (lo, hi) == (0.0, 0.5)  # P(mean = 0) = 1/27 > 2.5%, P(mean = 1/2) = 8/27
    assert d.ci_low == pytest.approx(lo, abs=1e-12) and d.ci_high == pytest.approx(hi, abs=1e-12)
    # several seeds: the seed-averaged value, and seed resampling widens nothing when seeds agree
    two = np.vstack([a, a])
    assert paired_bootstrap(two, b, items).delta == pytest.approx(d.delta)
    with pytest.raises(MultiNeuronError, match="paired rows"):
        paired_bootstrap(a, b[:, :4], items)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 4), st.floats(-3, 3), st.integers(0, 1000))
def test_bootstrap_constant_shift(n_items, n_lang, shift, seed):
    rng = np.random.default_rng(seed)
    items = np.repeat(np.arange(n_items), n_lang)
    b = rng.normal(size=(1, len(items)))
    d = paired_bootstrap(b + shift, b, items, n_boot=200, seed=seed)
    assert d.delta == pytest.approx(shift, abs=1e-9)
    assert d.ci_low == pytest.approx(shift, abs=1e-9) and d.ci_high == pytest.approx(
        shift, abs=1e-9
    )


def _rows():
    rng = np.random.default_rng(1)
    out = []
    items = [f"i{k}" for k in range(12)]
    langs = ["en", "de"]

    def add(target, op, seed, p, lp_shift):
        group = {
            "none": "none",
            "all-shared": "deactivate all-shared (static, last)",
            "random": "deactivate random (static, last)",
        }[target]
        for it in items:
            for x in langs:
                out.append(
                    {
                        "task": "t",
                        "item_id": it,
                        "language": x,
                        "group": group,
                        "condition": group + (f" seed={seed}" if seed is not None else ""),
                        "target": target,
                        "op": op,
                        "alpha": 1.0,
                        "mode": "static",
                        "scope": "last",
                        "include_bos": False,
                        "seed": seed,
                        "set_size": 0 if target == "none" else 5,
                        "greedy_match": bool(rng.random() < p),
                        "logprob": -1.0 + lp_shift + 0.01 * rng.normal(),
                    }
                )

    add("none", "none", None, 0.9, 0.0)
    add("all-shared", "zero", None, 0.1, -2.0)
    for s in range(3):
        add("random", "zero", s, 0.8, -0.1)
    return pd.DataFrame(out)


def test_paired_comparisons_pairs_and_decides():
    comp = paired_comparisons(_rows())
    pairs = set(zip(comp.condition, comp.reference, comp.metric, strict=True))
    shared, rnd = "deactivate all-shared (static, last)", "deactivate random (static, last)"
    assert {(shared, "none", "accuracy"), (rnd, "none", "logprob")} <= pairs
    assert (shared, rnd, "accuracy") in pairs  # the target vs its control
    lp = comp[(comp.condition == shared) & (comp.reference == rnd) & (comp.metric == "logprob")]
    row = lp.iloc[0]
    assert row.delta == pytest.approx(-1.9, abs=0.05)
    assert row.ci_high < 0 and row.p_value < 0.01 and row.n_seeds_reference == 3
    assert row.n_rows == 24 and row.n_items == 12
    acc = comp[
        (comp.condition == shared) & (comp.reference == "none") & (comp.metric == "accuracy")
    ]
    assert acc.iloc[0].ci_high < 0 and acc.iloc[0].p_value < 0.01
    assert not math.isnan(acc.iloc[0].delta)
    with pytest.raises(MultiNeuronError, match="'none'"):
        paired_comparisons(_rows().query("target != 'none'"))
    missing = _rows().drop(index=30)  # a row of the all-shared condition
    with pytest.raises(MultiNeuronError, match="no row for item"):
        paired_comparisons(missing)
