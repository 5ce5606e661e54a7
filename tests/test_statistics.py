import pytest
import torch
from helpers import seeded_acts
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_multineuron as tlm
from tl_multineuron import MultiNeuronError, SharingStats, categorize_acts, merge_all

LANGS = ("en", "de", "fr", "zh")


def _stats(thr=(0.0, 0.5), crit="gt"):
    return SharingStats(LANGS, thr, crit, n_layers=3, d_mlp=16)


def test_counts_match_per_item_categorization():
    acts = seeded_acts((7, 4, 3, 16))
    s = _stats()
    s.update(acts)
    assert s.n_items == 7
    for ti, t in enumerate(s.thresholds):
        cats = categorize_acts(acts, t, "gt", LANGS)
        for c in range(4):
            assert torch.equal(s.category_counts[ti, c], (cats.codes == c).sum(0).int())
        for li in range(4):
            assert torch.equal(s.specific_counts[ti, li], (cats.specific_lang == li).sum(0).int())
        assert torch.equal(s.active_counts[ti], (acts > t).sum(0).int())
    # fractions per layer sum to one; counts sum to d_mlp per item
    assert torch.allclose(s.layer_fractions().sum(-1), torch.ones(3, dtype=torch.float64))
    assert int(s.category_counts[0].sum()) == 7 * 3 * 16
    # sums are kept on a 2**-20 grid per batch (exact, order-free merges)
    torch.testing.assert_close(s.mean_activation(), acts.double().mean(0), rtol=0, atol=1e-6)
    assert torch.allclose(s.std_activation(), acts.double().std(0, unbiased=False), atol=1e-9)


def test_merge_of_shards_equals_one_run():
    acts = seeded_acts((10, 4, 3, 16), seed=3)
    whole = _stats()
    whole.update(acts[:4])
    whole.update(acts[4:])
    a, b = _stats(), _stats()
    a.update(acts[:4])
    b.update(acts[4:])
    merged = a.merge(b)
    assert merged.equals(whole)
    assert torch.equal(merge_all([a, b]).category_counts, whole.category_counts)


def test_merge_refuses_different_config():
    with pytest.raises(MultiNeuronError, match="thresholds"):
        _stats((0.0,)).merge(_stats((0.0, 0.5)))
    with pytest.raises(MultiNeuronError, match="criterion"):
        _stats(crit="gt").merge(_stats(crit="abs"))


def test_save_load_lossless(tmp_path):
    s = _stats()
    s.meta = {"site": "blocks.{layer}.mlp.hook_post", "x": [1, 2]}
    s.update(seeded_acts((5, 4, 3, 16)))
    s.save(tmp_path / "s.pt")
    t = SharingStats.load(tmp_path / "s.pt")
    assert t.equals(s) and t.meta == s.meta
    assert torch.equal(t.act_sum, s.act_sum) and t.act_sum.dtype == torch.float64


def test_frames_are_tidy():
    s = _stats()
    s.update(seeded_acts((5, 4, 3, 16)))
    df = s.to_frame()
    assert list(df.columns) == ["threshold", "layer", "category", "language", "value"]
    alls = df[df.language == "all"].groupby(["threshold", "layer"]).value.sum()
    assert (alls - 1).abs().max() < 1e-9
    names = list(tlm.CATEGORY_NAMES)
    for r in df.itertuples():  # every row is the tensor entry it names
        if r.language == "all":
            want = s.layer_fractions(r.threshold)[r.layer, names.index(r.category)]
        else:
            lang = s.languages.index(r.language)
            want = s.specific_per_language(r.threshold)[lang, r.layer] / s.d_mlp
        assert r.value == pytest.approx(float(want), abs=1e-12)
    assert len(df) == len(s.thresholds) * s.n_layers * (4 + len(s.languages))
    st_ = s.stability()
    assert set(st_.category) == {"non-activated", "specific", "partial-shared", "all-shared"}
    assert (st_.always <= st_.ever + 1e-12).all()
    freq = s.category_frequency()
    for r in st_.itertuples():
        c = names.index(r.category)
        assert r.always == pytest.approx(float((freq[c, r.layer] >= 1 - 1e-12).double().mean()))
        assert r.ever == pytest.approx(float((freq[c, r.layer] > 0).double().mean()))
        assert r.modal_share == pytest.approx(float(freq.max(0).values[r.layer].mean()))


def test_stability_of_constant_input_is_total():
    s = _stats((0.0,))
    x = seeded_acts((1, 4, 3, 16))
    s.update(x.repeat(6, 1, 1, 1))
    st_ = s.stability()
    assert (st_.modal_share == 1.0).all()
    present = st_[st_.ever > 0]
    assert (present.overlap == 1.0).all()


def test_lape_low_for_language_specific_neuron():
    s = SharingStats(("a", "b"), (0.0,), "gt", n_layers=1, d_mlp=2)
    acts = torch.tensor([[[[1.0, 1.0]], [[-1.0, 1.0]]]]).repeat(4, 1, 1, 1)
    s.update(acts)
    lape = s.lape()
    assert lape[0, 0] == 0.0 and abs(lape[0, 1] - torch.log(torch.tensor(2.0))) < 1e-6


def test_update_rejects_wrong_shape_and_nan():
    s = _stats()
    with pytest.raises(MultiNeuronError, match="expected"):
        s.update(torch.zeros(2, 3, 3, 16))
    bad = torch.zeros(2, 4, 3, 16)
    bad[1, 2, 0, 5] = float("nan")
    with pytest.raises(MultiNeuronError, match="language 'fr', layer 0, neuron 5"):
        s.update(bad)


def test_unknown_threshold():
    s = _stats()
    s.update(seeded_acts((2, 4, 3, 16)))
    with pytest.raises(MultiNeuronError, match="not recorded"):
        s.layer_fractions(0.3)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 1000))
def test_counts_sum_to_d_mlp_per_item(n, seed):
    s = _stats()
    s.update(seeded_acts((n, 4, 3, 16), seed))
    assert (s.category_counts.sum(1) == n).all()
    # specific counts across languages equal the specific category count
    assert torch.equal(s.specific_counts.sum(1), s.category_counts[:, 1])


def test_merge_order_does_not_change_a_bit():
    acts = seeded_acts((12, 4, 3, 16), seed=5) * 1000  # large values: rounding would show
    parts = []
    for k, sl in enumerate((slice(0, 5), slice(5, 7), slice(7, 12))):
        p = _stats()
        p.meta = {"dataset_fingerprint": f"shard{k}"}
        p.update(acts[sl])
        parts.append(p)
    a, b, c = parts
    orders = [a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b), b.merge(c).merge(a)]
    for m in orders[1:]:
        assert torch.equal(m.act_sum, orders[0].act_sum)
        assert torch.equal(m.act_sq_sum, orders[0].act_sq_sum) and m.equals(orders[0])
    assert orders[0].meta["dataset_fingerprints"] == ["shard0", "shard1", "shard2"]


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("model", "other-model", "different model"),
        ("weights_fingerprint", "f" * 16, "different model weights"),
        ("site", "blocks.{layer}.mlp.hook_pre", "different activation site"),
        ("dataset", "qa", "different dataset"),
        ("dataset_fingerprint", "same", "the same shard twice"),
    ],
)
def test_merge_names_the_mismatching_field(field, value, named):
    base = {"model": "m", "weights_fingerprint": "0" * 16, "site": "blocks.{layer}.mlp.hook_post"}
    a, b = _stats(), _stats()
    a.meta = {**base, "dataset": "facts", "dataset_fingerprint": "same"}
    b.meta = {**base, "dataset": "facts", "dataset_fingerprint": "other", field: value}
    with pytest.raises(MultiNeuronError, match=named):
        a.merge(b)
    assert not a.equals(b) or field == "dataset_fingerprint"


def test_dataset_fingerprint_covers_answers_and_order():
    from helpers import toy_dataset

    ds = toy_dataset(3)
    items = list(ds.items)
    edited = tlm.ParallelItem(
        items[0].item_id, items[0].prompts, {"en": " x", "de": " y", "fr": " z"}
    )
    changed = tlm.ParallelDataset((edited, *items[1:]), ds.languages, ds.name)
    swapped = tlm.ParallelDataset((items[1], items[0], items[2]), ds.languages, ds.name)
    fps = {ds.fingerprint(), changed.fingerprint(), swapped.fingerprint()}
    assert len(fps) == 3
