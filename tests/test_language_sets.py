"""Language-specific sets by every identification method, on statistics with planted
language-specific neurons (worked out by hand)."""

import pytest
import torch

from tl_multineuron import MultiNeuronError, SharingStats
from tl_multineuron.experiments.language_sets import (
    ITEM_METHODS,
    equalize,
    identify_language_sets,
)

LANGS = ("en", "de", "fr")
PLANTED = {"de": (0, 3), "fr": (1, 5)}  # (layer, neuron) firing for that language only


def planted_acts(n_items: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    acts = torch.where(torch.rand(n_items, 3, 2, 8, generator=g) < 0.5, 0.3, -0.05)
    acts = acts + 0.02 * torch.rand(acts.shape, generator=g)  # activations are continuous
    for lang, (layer, neuron) in PLANTED.items():
        acts[:, :, layer, neuron] = -0.1
        acts[:, LANGS.index(lang), layer, neuron] = 1.0 + 2.0 * torch.rand(n_items, generator=g)
    return acts


def planted_stats(n_items: int = 40, seed: int = 0) -> SharingStats:
    stats = SharingStats(LANGS, (0.0,), "gt", n_layers=2, d_mlp=8)
    stats.update(planted_acts(n_items, seed))
    return stats


@pytest.mark.parametrize("method", ITEM_METHODS)
def test_every_method_finds_the_planted_neurons(method):
    params = {
        "lape": {"top_rate": 2 / 16},
        "magnitude": {"top_rate": 1 / 16},
    }.get(method, {})
    sets = identify_language_sets(planted_stats(), method, **params)
    for lang, (layer, neuron) in PLANTED.items():
        m = sets.masks[LANGS.index(lang)]
        assert m[layer, neuron], (method, lang)
        assert int(m.sum()) == 1, (method, lang, m.nonzero().tolist())
    assert sets.neuron_set("de").mask[0, 3] and sets.neuron_set("de").name == f"{method}-de"
    frame = sets.to_frame()
    assert len(frame) == 3 * 2 and frame["size"].sum() == int(sets.masks.sum())


def test_lape_by_hand():
    """p = [[1, 0, 0]] -> entropy 0; p = [.5, .5, .5] -> log 3; the filter drops neurons whose
    largest p is not above the 0.95 quantile; the bar assigns a neuron to languages above it."""
    s = planted_stats()
    sets = identify_language_sets(
        s, "lape", top_rate=2 / 16, filter_rate=0.95, activation_bar_ratio=0.95
    )
    p = s.active_counts[0].double() / s.n_items
    assert p[1, 0, 3] == 1 and p[0, 0, 3] == 0 and sets.scores[1, 0, 3] == 0  # -entropy
    q = p[:, 1, 1] / p[:, 1, 1].sum()
    assert sets.scores[0, 1, 1] == pytest.approx(float((q * q.log()).sum()), abs=1e-6)
    # with a bar of the 0.5 quantile a shared neuron would pass it too, but entropy keeps it out
    wide = identify_language_sets(s, "lape", top_rate=2 / 16, activation_bar_ratio=0.5)
    assert int(wide.masks.sum()) >= 2


def test_sharing_matters_is_the_specific_frequency():
    s = planted_stats()
    sets = identify_language_sets(s, "sharing-matters", min_frequency=0.5)
    freq = s.specific_counts[0].double() / s.n_items
    assert torch.equal(sets.masks, freq >= 0.5)
    assert torch.allclose(sets.scores, freq.float())


def test_equal_sizes_across_methods_keep_each_methods_best():
    s = planted_stats()
    # 4 per language (positive differences)
    a = identify_language_sets(s, "magnitude", top_rate=4 / 16)
    b = identify_language_sets(s, "sharing-matters", min_frequency=0.1)
    eq = equalize([a, b])
    for x in LANGS:
        assert eq[0].size(x) == eq[1].size(x) == min(a.size(x), b.size(x))
        assert (eq[0].masks <= a.masks).all() and (eq[1].masks <= b.masks).all()
    assert eq[0].masks[1, 0, 3] and eq[0].masks[2, 1, 5]  # the best of each survive the cut
    none = identify_language_sets(s, "sharing-matters", min_frequency=1.0)  # empty for en
    kept = equalize([a, none])
    assert none.size("en") == 0 < a.size("en") == kept[0].size("en") and kept[1].size("en") == 0
    with pytest.raises(MultiNeuronError, match="cannot cut language 'de'"):
        a.limited({"de": a.size("de") + 1})


def test_bad_input_names_the_method_and_language():
    s = planted_stats()
    with pytest.raises(MultiNeuronError, match="method 'entropy'"):
        identify_language_sets(s, "entropy")
    with pytest.raises(
        MultiNeuronError, match=r"lape: top_rate 1.5; expected a number in \(0, 1\]"
    ):
        identify_language_sets(s, "lape", top_rate=1.5)
    with pytest.raises(
        MultiNeuronError, match=r"magnitude: unknown parameter\(s\) \['min_frequency'\]"
    ):
        identify_language_sets(s, "magnitude", min_frequency=0.5)
    sets = identify_language_sets(s, "sharing-matters", min_frequency=1.0)
    with pytest.raises(MultiNeuronError, match="sharing-matters: language 'en' has no specific"):
        sets.neuron_set("en")
    with pytest.raises(MultiNeuronError, match="at least one item"):
        identify_language_sets(SharingStats(LANGS, (0.0,), "gt", n_layers=2, d_mlp=8), "lape")


def test_act_prob_90p_is_token_level_only():
    with pytest.raises(MultiNeuronError, match="act-prob-90p is defined on tokens of running"):
        identify_language_sets(planted_stats(), "act-prob-90p")


def test_common_languages_are_those_every_finding_method_covers():
    from tl_multineuron.runs.specificity import common_languages

    s = planted_stats()
    a = identify_language_sets(s, "magnitude", top_rate=4 / 16)  # every language
    b = identify_language_sets(s, "sharing-matters", min_frequency=1.0)  # de and fr only
    none = identify_language_sets(s, "sharing-matters", min_frequency=1.0).limited(
        {"de": 0, "fr": 0}
    )  # nothing at all: left out of the question
    assert common_languages([a, b, none]) == ["de", "fr"]
    assert common_languages([none]) == []


def test_methods_that_cannot_run_are_named_and_left_out():
    from tl_multineuron.runs.specificity import SpecificityRunConfig, runnable_methods

    keep, left = runnable_methods(SpecificityRunConfig(unit="item"), has_items=True)
    assert keep == ["sharing-matters", "lape", "magnitude"]
    assert left == [("act-prob-90p", "is defined on tokens of running text only (unit 'token')")]
    keep, left = runnable_methods(SpecificityRunConfig(), has_items=False)
    assert keep == ["lape", "act-prob-90p"]
    assert [m for m, _ in left] == ["sharing-matters", "magnitude"]
    assert all("needs items" in why for _, why in left)
    with pytest.raises(MultiNeuronError, match="window 'lape:1'"):
        SpecificityRunConfig(window="lape:1")
    assert SpecificityRunConfig(window="lape:64").params("act-prob-90p") == {"top_rate": 0.00125}
