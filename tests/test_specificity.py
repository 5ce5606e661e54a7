"""The deactivation matrix and selectivity: every-position scores against a plain forward,
hand-made rows for the tables."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_model, toy_dataset

from tl_multineuron import MultiNeuronError, SharingStats
from tl_multineuron.experiments.language_sets import identify
from tl_multineuron.experiments.specificity import (
    SpecificityConfig,
    deactivation_matrix,
    matrix_table,
    selectivity,
    text_rows,
)
from tl_multineuron.sharing.recording import encode


@pytest.fixture(scope="module")
def native():
    return tiny_model("gated", seed=4)


def test_every_position_score_is_a_plain_forwards_log_likelihood(native):
    ds = toy_dataset(2, ("en", "de"))
    rows, keys = text_rows(native, ds)
    stats = SharingStats(("en", "de"), (0.0,), "gt", native.cfg.n_layers, native.cfg.d_mlp)
    stats.update(torch.randn(4, 2, native.cfg.n_layers, native.cfg.d_mlp))
    out = deactivation_matrix(native, ds, [], stats, SpecificityConfig(seeds=(0,)))
    assert set(out["method"]) == {"none"} and len(out) == len(keys)
    for r, (item, lang) in enumerate(keys.itertuples(index=False)):
        it = next(i for i in ds.items if i.item_id == item)
        ids = encode(native, it.prompts[lang] + ds.target(it, lang))
        with torch.inference_mode():
            lp = torch.log_softmax(native(torch.tensor([ids]))[0].double(), -1)
        want = np.mean([float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)])
        assert out["mean_ll"].iloc[r] == pytest.approx(want, abs=1e-5)
        assert out["n_tokens"].iloc[r] == len(ids) - 1


def test_matrix_rows_controls_and_empty_sets(native):
    ds = toy_dataset(3, ("en", "de"))
    L, D = native.cfg.n_layers, native.cfg.d_mlp
    stats = SharingStats(("en", "de"), (0.0,), "gt", L, D)
    g = torch.Generator().manual_seed(0)
    stats.update(torch.randn(6, 2, L, D, generator=g))
    sets = identify(stats, "magnitude", top_rate=0.05)
    empty = identify(stats, "sharing-matters", min_frequency=1.0)  # nothing specific in 100%
    rows = deactivation_matrix(native, ds, [sets, empty], stats, SpecificityConfig(seeds=(0, 1)))
    edited = rows[rows["method"] == "magnitude"]
    assert set(edited["control"]) == {"set", "random", "matched"}
    assert (edited.groupby(["set_language", "control"])["set_size"].nunique() == 1).all()
    assert "sharing-matters" not in set(rows["method"])  # empty sets are not scored as zero
    table = matrix_table(rows, n_boot=200)
    assert len(table) == 2 * 3 * 2  # set languages x controls x text languages
    assert (table["ci_low"] <= table["delta"]).all() and (table["delta"] <= table["ci_high"]).all()


def _rows(effect):
    """Hand-made rows: deactivating L's set changes text in L' by effect[L][L'] on every item."""
    out = []
    for k in range(6):
        for y in ("en", "de", "fr"):
            base = -2.0 - 0.1 * k
            out.append(
                {
                    "method": "none",
                    "set_language": "-",
                    "control": "none",
                    "seed": -1,
                    "set_size": 0,
                    "item_id": f"i{k}",
                    "language": y,
                    "mean_ll": base,
                }
            )
            for x in ("en", "de", "fr"):
                out.append({"method": "m", "set_language": x, "control": "set", "seed": -1,
                            "set_size": 3, "item_id": f"i{k}", "language": y,
                            "mean_ll": base + effect[x][y] + 0.01 * (k % 2)})  # fmt: skip
    return pd.DataFrame(out)


def test_selectivity_and_matrix_by_hand():
    diag = {
        x: {y: (-0.5 if x == y else -0.1) for y in ("en", "de", "fr")} for x in ("en", "de", "fr")
    }
    rows = _rows(diag)
    t = matrix_table(rows, n_boot=300).set_index(["set_language", "language"])
    assert t.loc[("de", "de"), "delta"] == pytest.approx(-0.5 + 0.005)
    assert t.loc[("de", "fr"), "delta"] == pytest.approx(-0.1 + 0.005)
    s = selectivity(rows, n_boot=300).set_index("set_language")
    assert s.loc["de", "selectivity"] == pytest.approx(-0.4)
    assert s.loc["all", "selectivity"] == pytest.approx(-0.4)
    assert s.loc["all", "ci_high"] < 0
    flat = {x: {y: -0.2 for y in ("en", "de", "fr")} for x in ("en", "de", "fr")}
    assert selectivity(_rows(flat), n_boot=300).set_index("set_language").loc[
        "all", "selectivity"
    ] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(MultiNeuronError, match="'none'"):
        matrix_table(rows[rows["method"] != "none"])
