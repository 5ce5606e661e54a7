"""The activation histogram: exceedance at its threshold equals a direct count, the threshold
is the lowest edge with at most 1 - q above it, shards merge exactly, saves losslessly."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_multineuron import MultiNeuronError
from tl_multineuron.sharing.histogram import ActivationHistogram, default_edges

LANGS = ("en", "de", "fr")


def _acts(seed: int, n_items: int = 30, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n_items, 3, 2, 5, generator=g) + torch.rand(1, 3, 2, 5, generator=g)


def _hist(acts: torch.Tensor) -> ActivationHistogram:
    h = ActivationHistogram(LANGS, 2, 5)
    h.update(acts)
    return h


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.sampled_from([0.5, 0.75, 0.9, 0.95]))
def test_exceedance_splits_the_quantiles_bin_and_sums_to_the_tail(seed, q):
    acts = _acts(seed)
    h = _hist(acts)
    p = h.exceed_probability(q)  # [lang, layer, neuron]
    # over the languages, exactly the top 1 - q of the pooled activations
    assert torch.allclose(p.sum(0), torch.full((2, 5), (1 - q) * 3, dtype=torch.float64))
    # each language between its count above the quantile's bin and from the bin's bottom up
    pooled = acts.transpose(0, 1).reshape(-1, 2, 5)
    thr = h.threshold(q)
    edges = torch.cat([torch.tensor([-math.inf]), h.edges, torch.tensor([math.inf])])
    b = torch.bucketize(thr.clamp(h.edges[0], h.edges[-1]), h.edges, right=True)
    lo, hi = edges[b], edges[b + 1]
    if ((thr == h.edges[-1]) | (thr == h.edges[0])).any():
        return  # an open-ended bin: the interpolation stops at its finite edge
    assert ((acts >= hi).double().mean(0) <= p + 1e-9).all()
    assert (p <= (acts >= lo).double().mean(0) + 1e-9).all()
    # the threshold is inside the bin, and splits the pooled values near 1 - q
    assert ((lo <= thr) & (thr <= hi)).all()
    assert ((pooled >= hi).double().mean(0) <= 1 - q + 1e-9).all()


def test_shards_merge_into_one_pass_and_save_losslessly(tmp_path):
    acts = _acts(3, n_items=20)
    one = _hist(acts)
    parts = _hist(acts[:7]).merge(_hist(acts[7:]))
    assert parts.equals(one) and parts.n_items == 20
    one.save(tmp_path / "h.pt")
    back = ActivationHistogram.load(tmp_path / "h.pt")
    assert back.equals(one) and torch.equal(back.edges, one.edges)
    assert int(one.counts.sum()) == acts.numel()


def test_a_one_language_cluster_narrower_than_a_bin_still_splits_at_the_quantile():
    """de holds a third of the values, all at 1.0 (one bin): the top 10% of the pooled values
    is 30% of de's items, as an exact quantile would give, and none of the others'."""
    acts = torch.zeros(10, 3, 2, 5)
    acts[:, 1] = 1.0
    p = _hist(acts).exceed_probability(0.9)
    assert torch.allclose(p[1], torch.full((2, 5), 0.3, dtype=torch.float64))
    assert (p[0] == 0).all() and (p[2] == 0).all()


def test_bad_input_is_named():
    h = ActivationHistogram(LANGS, 2, 5)
    with pytest.raises(MultiNeuronError, match="no items recorded"):
        h.exceed_probability(0.9)
    with pytest.raises(MultiNeuronError, match=r"expected \[item, lang=3, layer=2, neuron=5\]"):
        h.update(torch.zeros(2, 2, 2, 5))
    with pytest.raises(MultiNeuronError, match="non-finite"):
        h.update(torch.full((1, 3, 2, 5), math.nan))
    h.update(torch.zeros(1, 3, 2, 5))
    with pytest.raises(MultiNeuronError, match=r"quantile 1.0"):
        h.exceed_probability(1.0)
    other = ActivationHistogram(LANGS, 2, 5, default_edges(32))
    with pytest.raises(MultiNeuronError, match="different bin edges"):
        h.merge(other)
    with pytest.raises(MultiNeuronError, match="n_bins 2"):
        default_edges(2)
