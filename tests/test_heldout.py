"""The steering study's held-out statistics and the accuracy table, on hand-made rows whose
answers can be worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from tl_multineuron import MultiNeuronError, accuracy_table
from tl_multineuron.steering.study import ALL_OTHER, heldout_comparisons, verdict

ITEMS = [f"i{k}" for k in range(8)]


def _rows(langs, steered_gain, control_gain=0.0):
    """'none' right on even items; the steered condition also right on the first
    ``steered_gain[lang]`` odd items; two random-control seeds right on ``control_gain``."""
    out = []
    for lang in langs:
        for k, item in enumerate(ITEMS):
            base = k % 2 == 0
            odd_rank = k // 2
            conds = [
                ("none", -1, base),
                ("scale @ L0-1", -1, base or odd_rank < steered_gain[lang]),
            ]
            conds += [(f"random seed={s}", s, base or odd_rank < control_gain) for s in (0, 1)]
            for cond, seed, ok in conds:
                out.append(
                    {
                        "condition": cond, "seed": seed, "item_id": item, "language": lang,
                        "greedy_match": ok, "logprob": -1.0 + 0.5 * ok,
                    }
                )  # fmt: skip
    return pd.DataFrame(out)


def test_heldout_comparisons_pair_by_item_and_pool_the_non_english_rows():
    rows = _rows(["en", "de", "fr"], {"en": 0, "de": 4, "fr": 2}, control_gain=1)
    comp = heldout_comparisons(rows, n_boot=300)
    acc = comp[(comp.metric == "accuracy") & (comp.reference == "none")].set_index("language")
    # de: +4 of 8 items = +50 points; fr: +2 of 8 = +25; en: 0; non-English: (50 + 25) / 2
    assert acc.loc["de", "delta"] == pytest.approx(50.0)
    assert acc.loc["fr", "delta"] == pytest.approx(25.0)
    assert acc.loc["en", "delta"] == pytest.approx(0.0)
    assert acc.loc[ALL_OTHER, "delta"] == pytest.approx(37.5)
    assert acc.loc["all", "delta"] == pytest.approx(25.0)
    assert acc.loc[ALL_OTHER, "n_rows"] == 16 and acc.loc[ALL_OTHER, "n_items"] == 8
    assert acc.loc["en", "p_value"] == 1.0  # no discordant pair
    assert acc.loc[ALL_OTHER, "ci_low"] > 0 and acc.loc["de", "ci_high"] <= 100
    # vs the random controls (seeds pooled): both seeds gain one odd item everywhere
    ctl = comp[(comp.metric == "accuracy") & (comp.reference == "random")].set_index("language")
    assert ctl.loc["de", "delta"] == pytest.approx(50.0 - 12.5)
    assert (ctl["n_seeds_reference"] == 2).all()
    lp = comp[(comp.metric == "logprob") & (comp.reference == "none")].set_index("language")
    assert lp.loc["de", "delta"] == pytest.approx(0.5 * 4 / 8)  # nats


def test_verdict_needs_a_non_english_gain_and_spares_english():
    rows = _rows(["en", "de", "fr"], {"en": 0, "de": 4, "fr": 4})
    v = verdict(heldout_comparisons(rows, n_boot=300))
    assert v["met"] and v["english_delta"] == 0.0 and v["non_english_delta"] == pytest.approx(50)
    assert v["non_english_ci"][0] > 0
    # English loses 2 of 8 items (-25 points): beyond a 1-point allowance, within a 30-point one
    rows = _rows(["en", "de", "fr"], {"en": 0, "de": 4, "fr": 4})
    hit = (
        (rows.condition == "scale @ L0-1")
        & (rows.language == "en")
        & rows.item_id.isin(["i0", "i2"])
    )
    rows.loc[hit, "greedy_match"] = False
    comp = heldout_comparisons(rows, n_boot=300)
    assert verdict(comp)["english_delta"] == pytest.approx(-25.0)
    assert not verdict(comp)["met"] and verdict(comp, max_english_drop=30.0)["met"]
    # no gain: the interval is not above 0
    flat = heldout_comparisons(_rows(["en", "de"], {"en": 0, "de": 0}), n_boot=300)
    assert not verdict(flat)["met"]


def test_without_english_rows_every_row_is_non_english_and_english_is_not_judged():
    rows = _rows(["de", "fr"], {"de": 4, "fr": 2})
    comp = heldout_comparisons(rows, n_boot=300)
    acc = comp[(comp.metric == "accuracy") & (comp.reference == "none")].set_index("language")
    assert "en" not in acc.index
    assert acc.loc[ALL_OTHER, "delta"] == pytest.approx(acc.loc["all", "delta"])
    v = verdict(comp)
    assert v["english_delta"] is None and v["met"]


def test_heldout_comparisons_refuse_unpaired_or_ambiguous_rows():
    rows = _rows(["en", "de"], {"en": 0, "de": 2})
    with pytest.raises(MultiNeuronError, match="has no row for item 'i3', language 'de'"):
        heldout_comparisons(rows.drop(rows.index[(rows.condition == "scale @ L0-1")
                                                 & (rows.item_id == "i3")
                                                 & (rows.language == "de")]))  # fmt: skip
    two = pd.concat([rows, rows[rows.condition == "scale @ L0-1"].assign(condition="other")])
    with pytest.raises(MultiNeuronError, match="expected one steered configuration"):
        heldout_comparisons(two)
    with pytest.raises(MultiNeuronError, match="'none' condition"):
        heldout_comparisons(rows[rows.condition != "none"])


def test_accuracy_table_is_percent_per_task_and_language():
    res = pd.DataFrame(
        {
            "task": ["facts"] * 4 + ["qa"] * 2,
            "language": ["en", "en", "de", "de", "en", "de"],
            "prefix_match": [True, False, True, True, False, False],
            "text_match": [True, True, True, True, True, False],
        }
    )
    t = accuracy_table(res)
    assert list(t.index) == ["facts", "qa"] and list(t.columns) == ["en", "de"]
    assert t.loc["facts", "en"] == 50.0 and t.loc["facts", "de"] == 100.0
    assert t.loc["qa", "en"] == 0.0
    assert accuracy_table(res, "text_match").loc["qa", "en"] == 100.0
    third = pd.DataFrame({"task": ["x"] * 3, "language": ["en"] * 3, "prefix_match": [1, 0, 0]})
    assert accuracy_table(third).loc["x", "en"] == 33.3  # rounded to 0.1
    assert np.isclose(accuracy_table(third, "prefix_match").to_numpy(), 33.3).all()
