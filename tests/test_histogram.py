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
def test_exceedance_is_a_direct_count_at_the_minimal_threshold(seed, q):
    acts = _acts(seed)
    h = _hist(acts)
    thr = h.threshold(q)  # [layer, neuron]
    direct = (acts >= thr).double().mean(0)  # [lang, layer, neuron]
    assert torch.equal(h.exceed_probability(q), direct)
    pooled = acts.transpose(0, 1).reshape(-1, 2, 5)  # every language's values
    above = (pooled >= thr).double().mean(0)
    assert (above <= 1 - q + 1e-12).all()
    # minimal: the edge one bin lower would hold more than 1 - q
    edges = torch.cat([torch.tensor([-math.inf]), h.edges, torch.tensor([math.inf])])
    k = h.threshold_bin(q)
    lower = edges[(k - 1).clamp_min(0)]
    more = (pooled >= lower).double().mean(0)
    assert ((more > 1 - q) | (k == 0)).all()
    # and it sits within one bin of the exact quantile
    exact = torch.quantile(pooled.double(), q, dim=0, interpolation="higher")
    hi = edges[(k + 1).clamp_max(len(edges) - 1)]
    assert ((lower <= exact) & (exact <= hi)).all()


def test_shards_merge_into_one_pass_and_save_losslessly(tmp_path):
    acts = _acts(3, n_items=20)
    one = _hist(acts)
    parts = _hist(acts[:7]).merge(_hist(acts[7:]))
    assert parts.equals(one) and parts.n_items == 20
    one.save(tmp_path / "h.pt")
    back = ActivationHistogram.load(tmp_path / "h.pt")
    assert back.equals(one) and torch.equal(back.edges, one.edges)
    assert int(one.counts.sum()) == acts.numel()


def test_a_point_mass_above_the_tail_share_leaves_nothing_above():
    """A value held by more than 1 - q of the items cannot be split at bin resolution (nor by
    a strict '>' at the exact quantile): the threshold goes above it, probabilities are 0."""
    acts = torch.zeros(10, 3, 2, 5)
    acts[:, 1] = 1.0  # a third of the values at 1.0
    h = _hist(acts)
    assert (h.exceed_probability(0.9) == 0).all()
    assert torch.isinf(h.threshold(0.9)).all() or (h.threshold(0.9) > 1.0).all()


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
