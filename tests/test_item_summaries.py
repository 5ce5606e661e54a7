"""Per-item summaries, language pairs, the Mantel test, typology and the claim (i) statistics:
hand counts, merge = one run, brute-force references."""

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from tl_multineuron import MultiNeuronError, SharingStats
from tl_multineuron.sharing import item_summaries, language_pairs
from tl_multineuron.sharing.classification import categorize
from tl_multineuron.sharing.item_summaries import ItemSummaries
from tl_multineuron.sharing.language_pairs import (
    cluster_order,
    jaccard_matrix,
    pair_table,
    similarity_table,
)
from tl_multineuron.sharing.mantel import mantel
from tl_multineuron.sharing.task_comparison import input_variation, task_differences
from tl_multineuron.sharing.typology import TypologyWarning, distance_matrix, iso639_3, script_of

LANGS = ("en", "de", "ja")


def summaries(active: torch.Tensor, langs=LANGS, ids=None) -> ItemSummaries:
    """From a hand-made mask ``[item, lang, layer, neuron]`` at one threshold."""
    act = active.unsqueeze(0)
    s = ItemSummaries(langs, (0.0,), active.shape[2], active.shape[3])
    s.update(act, categorize(act, langs).codes, ids or [f"i{k}" for k in range(active.shape[0])])
    return s


# two items, 3 languages, 1 layer, 4 neurons (rows: en, de, ja)
HAND = torch.tensor(
    [
        [[[1, 1, 0, 0]], [[1, 0, 1, 0]], [[1, 0, 0, 0]]],  # n0 all, n1 en, n2 de, n3 none
        [[[1, 1, 1, 0]], [[1, 1, 0, 0]], [[0, 1, 0, 1]]],  # n0 en+de, n1 all, n2 en, n3 ja
    ],
    dtype=torch.bool,
)


@pytest.mark.parametrize("path", ["histogram", "masks"])
def test_pair_counts_against_a_hand_count(path, monkeypatch):
    if path == "masks":  # the path for batches too large for one histogram
        monkeypatch.setattr(item_summaries, "HISTOGRAM_BINS", 0)
    s = summaries(HAND)
    # item 0: both(en,de)=1 (n0), both(en,ja)=1, both(de,ja)=1; item 1: en-de 2, en-ja 1, de-ja 1
    assert s.pairs[:, 0, 0].tolist() == [
        [[2, 1, 1], [1, 2, 1], [1, 1, 1]],
        [[3, 2, 1], [2, 2, 1], [1, 1, 2]],
    ]
    # categories per item: [non, specific, partial, all]
    assert s.counts[:, 0, 0].tolist() == [[1, 2, 0, 1], [0, 2, 1, 1]]
    assert s.specific[:, 0, 0].tolist() == [[1, 1, 0], [1, 0, 1]]
    table = pair_table(s, n_boot=50)
    en_de = table[(table.layer == "all") & (table.lang_a == "en") & (table.lang_b == "de")]
    # both = 1 + 2 = 3; either = (2 + 2 - 1) + (3 + 2 - 2) = 6
    assert en_de[["both", "either"]].values.tolist() == [[3, 6]]
    assert en_de.jaccard.item() == pytest.approx(0.5)
    assert (table.jaccard_low <= table.jaccard + 1e-12).all()
    assert (table.jaccard <= table.jaccard_high + 1e-12).all()
    assert set(table.columns) >= {"threshold", "layer", "lang_a", "lang_b", "both", "either"}
    m = jaccard_matrix(s)
    assert m[0, 1].item() == pytest.approx(0.5) and m[1, 0].item() == pytest.approx(0.5)
    # partial-shared composition: one neuron, en+de, in item 1
    sub = s.subsets()
    assert sub[["layer", "languages", "count", "share"]].values.tolist() == [
        [0, "en+de", 1, 1.0],
        ["all", "en+de", 1, 1.0],
    ]


@settings(max_examples=25, deadline=None)
@given(
    n_lang=st.integers(2, 7),
    n_thr=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_histogram_and_mask_paths_are_equal(n_lang, n_thr, seed):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(3, n_lang, 2, 40, generator=g)
    thr = torch.linspace(-0.5, 1.0, n_thr)
    active = acts.unsqueeze(0) > thr.view(-1, 1, 1, 1, 1)
    codes = categorize(active).codes
    langs = tuple(f"l{i}" for i in range(n_lang))
    out = []
    for bins in (item_summaries.HISTOGRAM_BINS, 0):
        s = ItemSummaries(langs, tuple(thr.tolist()), 2, 40)
        old, item_summaries.HISTOGRAM_BINS = item_summaries.HISTOGRAM_BINS, bins
        try:
            s.update(active, codes, ["a", "b", "c"])
        finally:
            item_summaries.HISTOGRAM_BINS = old
        out.append(s)
    assert out[0].equals(out[1])
    # against the definitions: a pair's count is the neurons active in both languages
    both = (active.unsqueeze(3) & active.unsqueeze(2)).sum(-1)  # [thr, item, lang, lang, layer]
    assert torch.equal(out[0].pairs, both.permute(1, 0, 4, 2, 3).to(torch.int32))


def test_bands_are_the_spread_over_items():
    s = summaries(HAND)
    b = s.bands().set_index("category")
    # specific: 2/4 in both items; non-activated: 1/4 then 0
    assert b.loc["specific", ["mean", "min", "max"]].tolist() == [0.5, 0.5, 0.5]
    assert b.loc["non-activated", ["mean", "min", "q25", "median", "q75", "max"]].tolist() == [
        0.125, 0.0, 0.0625, 0.125, 0.1875, 0.25,
    ]  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(2, 5), st.integers(1, 3))
def test_summaries_agree_with_the_statistics_and_split_shards_merge_to_one_run(
    seed, n_items, n_langs, split
):
    g = torch.Generator().manual_seed(seed)
    langs = tuple(f"l{i}" for i in range(n_langs))
    acts = torch.randn(n_items + split, n_langs, 2, 6, generator=g)
    ids = [f"x{k}" for k in range(len(acts))]

    def stats():
        return SharingStats(
            langs, (0.0, 0.3), "gt", 2, 6, items=ItemSummaries(langs, (0.0, 0.3), 2, 6)
        )

    one = stats()
    one.update(acts, ids)
    a, b = stats(), stats()
    a.update(acts[:split], ids[:split])
    b.update(acts[split:], ids[split:])
    merged = a.merge(b)  # activation sums are rounded per batch: only the counts are bit-equal
    assert merged.items.equals(one.items)
    assert torch.equal(merged.category_counts, one.category_counts)
    it = one.items
    assert (it.counts.sum(-1) == 6).all()  # every neuron in one category
    diag = torch.diagonal(it.pairs, dim1=-2, dim2=-1).sum(0)  # [thr, layer, lang]
    assert torch.equal(diag, one.active_counts.sum(-1).transpose(1, 2))
    assert torch.equal(it.specific.sum(0).transpose(1, 2), one.specific_counts.sum(-1))
    # subsets count exactly the partial-shared (item, neuron) pairs
    partial = it.counts[..., 2].sum().item()
    assert it.subset_counts.sum().item() == partial
    # save / load keeps them
    back = SharingStats.from_state(one.state())
    assert back.equals(one)


def test_merge_refuses_other_languages_and_repeated_items():
    a = summaries(HAND)
    b = summaries(HAND, langs=("de", "en", "ja"), ids=["j0", "j1"])
    with pytest.raises(MultiNeuronError, match="different languages"):
        a.merge(b)
    with pytest.raises(MultiNeuronError, match="in both"):
        a.merge(summaries(HAND))
    with pytest.raises(MultiNeuronError, match="summarised twice"):
        a.update(HAND.unsqueeze(0), categorize(HAND.unsqueeze(0), LANGS).codes, ["i0", "z"])
    old = SharingStats(LANGS, (0.0,), "gt", 1, 4)
    new = SharingStats(LANGS, (0.0,), "gt", 1, 4, items=ItemSummaries(LANGS, (0.0,), 1, 4))
    with pytest.raises(MultiNeuronError, match="per-item summaries"):
        old.merge(new)


# -- Mantel ---------------------------------------------------------------------------------------
def _brute_force(a, b):
    n = a.shape[0]
    iu = np.triu_indices(n, 1)
    r = spearmanr(a[iu], b[iu]).statistic
    rs = [spearmanr(a[iu], b[np.ix_(p, p)][iu]).statistic for p in itertools.permutations(range(n))]
    return r, np.mean(np.abs(rs) >= abs(r) - 1e-12)


def _random_distance(rng, n):
    x = rng.random((n, 3))
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def test_mantel_equals_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(3):
        a, b = _random_distance(rng, 5), _random_distance(rng, 5)
        r, p = _brute_force(a, b)
        res = mantel(a, b, n_perm=200)  # 5! = 120 <= 200: every permutation
        assert res.exact and res.n_permutations == 120
        assert res.statistic == pytest.approx(r) and res.p_value == pytest.approx(p)


def test_mantel_known_cases():
    rng = np.random.default_rng(1)
    a = _random_distance(rng, 6)
    same = mantel(a, a, n_perm=1000)  # 720 permutations: only the identity reaches r = 1
    assert same.statistic == pytest.approx(1.0) and same.p_value == pytest.approx(1 / 720)
    flipped = mantel(a, -a, n_perm=1000)
    assert flipped.statistic == pytest.approx(-1.0) and flipped.p_value == pytest.approx(1 / 720)
    big = _random_distance(rng, 9)  # 9! > n_perm: random permutations, (hits + 1) / (n + 1)
    res = mantel(big, big, n_perm=999, seed=3)
    assert not res.exact and res.p_value == pytest.approx(1 / 1000)
    with pytest.raises(MultiNeuronError, match="at least 3"):
        mantel(a[:2, :2], a[:2, :2])
    with pytest.raises(MultiNeuronError, match="same"):
        mantel(a, a[:5, :5])


# -- typology -------------------------------------------------------------------------------------
def test_script_distance_and_codes():
    assert iso639_3("zh-hans") == "zho" and iso639_3("de") == "deu" and iso639_3("arb") == "arb"
    assert (
        script_of("ru") == "Cyrl" and script_of("zh-Hant") == "Hant" and script_of("ja") == "Jpan"
    )
    m, kept = distance_matrix("script", ["en", "de", "ru", "zh"])
    assert kept == ["en", "de", "ru", "zh"]
    assert m.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]


def test_uriel_distances_leave_out_unknown_languages_with_a_warning():
    with pytest.warns(TypologyWarning, match=r"genetic distance: language\(s\) \['qqq'\] left out"):
        m, kept = distance_matrix("genetic", ["en", "de", "qqq", "ja"])
    assert kept == ["en", "de", "ja"] and m.shape == (3, 3)
    assert m[0, 1] < m[0, 2]  # English is closer to German than to Japanese
    assert np.allclose(m, m.T) and (np.diag(m) == 0).all()


def test_similarity_table_finds_a_planted_relation(monkeypatch):
    """Co-activation planted to fall with a known distance: the statistic is +1, exactly."""
    langs = ("a", "b", "c", "d", "e")
    pos = torch.tensor([0.0, 1.0, 3.0, 6.0, 10.0])  # languages on a line
    dist = (pos[:, None] - pos[None]).abs().numpy()
    # neuron k active in language i within 60 of 200 + 8 pos_i: windows of equal size whose
    # overlap falls strictly with the distance
    k = torch.arange(600).float()
    active = ((k[None, :] - 200 - 8 * pos[:, None]).abs() < 60).view(1, 5, 1, 600)
    s = summaries(active.repeat(3, 1, 1, 1), langs=langs)
    monkeypatch.setattr(language_pairs, "distance_matrix", lambda kind, ls: (dist, list(ls)))
    table = similarity_table(s, distances=("genetic",), n_perm=9999)
    pooled = table[table.layer == "all"].iloc[0]
    assert pooled.statistic == pytest.approx(1.0) and 1 / 120 <= pooled.p_value <= 2 / 120
    assert pooled.n_languages == 5 and pooled.exact
    order = cluster_order(1 - jaccard_matrix(s).numpy())
    assert sorted(order) == list(range(5)) and abs(order.index(0) - order.index(1)) == 1


# -- claim (i) ------------------------------------------------------------------------------------
def test_task_differences_and_input_variation():
    a = summaries(HAND)  # all-shared 1/4 on each item
    none_shared = HAND.clone()
    none_shared[:, 2] = False  # ja never active: no all-shared neuron
    b = summaries(none_shared, ids=["k0", "k1"])
    table = task_differences({"t1": a, "t2": b}, n_boot=200)
    row = table[(table.layer == "all") & (table.category == "all-shared")].iloc[0]
    assert (row.task_a, row.task_b) == ("t1", "t2")
    assert row["diff"] == pytest.approx(0.25) and row.ci_low == pytest.approx(0.25)
    same = task_differences({"t1": a, "t1 again": summaries(HAND, ids=["m0", "m1"])}, n_boot=50)
    assert (same["diff"] == 0).all()
    with pytest.raises(MultiNeuronError, match="at least 2"):
        task_differences({"t1": a})
    stats = SharingStats(LANGS, (0.0,), "gt", 1, 4, items=ItemSummaries(LANGS, (0.0,), 1, 4))
    acts = HAND.float() - 0.5  # active where True
    stats.update(acts, ["i0", "i1"])
    var = input_variation(stats).set_index("category")
    # specific: 2 of the 4 neurons on each item; only n2 is specific on both
    assert var.loc["specific", "mean"] == pytest.approx(0.5)
    assert var.loc["specific", "always"] == pytest.approx(0.25)
    assert var.loc["all-shared", "always"] == 0.0 and var.loc["all-shared", "ever"] == 0.5
    assert math.isclose(var.loc["specific", "always_over_mean"], 0.5)


def test_analyze_writes_the_pair_and_similarity_tables(tmp_path):
    from helpers import tiny_hf_dir, toy_dataset

    from tl_multineuron.cli import main

    hf = tiny_hf_dir(tmp_path / "model")
    data = tmp_path / "toy.jsonl"
    toy_dataset(5, ("en", "de", "fr", "ja")).to_jsonl(data)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TypologyWarning)  # every language is known
        args = ["analyze", "--model", hf, "--data", str(data), "--out", str(out)]
        assert main([*args, "--threshold", "0,0.1", "--no-progress", "--no-views"]) == 0
    pairs = pd.read_csv(out / "language_pairs.csv")
    assert {"threshold", "layer", "lang_a", "lang_b", "both", "either", "jaccard"} <= set(pairs)
    assert set(pairs.threshold) == {0.0, 0.1} and "all" in set(pairs.layer.astype(str))
    assert len(pairs) == 2 * 3 * 6  # thresholds x (2 layers + pooled) x pairs
    sim = pd.read_csv(out / "language_similarity.csv")
    assert {"distance", "layer", "statistic", "p_value", "n_languages"} <= set(sim)
    assert set(sim.distance) == {"genetic", "syntactic", "geographic", "script"}
    assert sim.statistic.between(-1, 1).all() and sim.p_value.between(0, 1).all()
    assert (out / "category_bands.csv").exists() and (out / "partial_subsets.csv").exists()
