import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from tl_multineuron import (
    Category,
    MultiNeuronError,
    active_mask,
    categorize,
    categorize_acts,
    validate_thresholds,
)


def test_hand_checked_categories():
    # 3 languages, 1 layer, 5 neurons
    acts = torch.tensor(
        [
            [[1.0, 0.5, -1.0, 0.0, 2.0]],  # en
            [[1.0, 0.5, -1.0, 0.0, -2.0]],  # de
            [[1.0, -0.5, -1.0, 3.0, -2.0]],  # fr
        ]
    )
    cats = categorize_acts(acts, 0.0, "gt", ["en", "de", "fr"])
    assert cats.codes.tolist() == [[3, 2, 0, 1, 1]]
    assert cats.specific_lang.tolist() == [[-1, -1, -1, 2, 0]]
    assert cats.specific_mask("fr").tolist() == [[False, False, False, True, False]]
    # |a| > t: neuron 2 (all -1) is all-shared, neuron 4 too
    cats = categorize_acts(acts, 0.0, "abs", ["en", "de", "fr"])
    assert cats.codes.tolist() == [[3, 3, 3, 1, 3]]
    # a > t is strict: an activation equal to the threshold is inactive
    cats = categorize_acts(acts, 1.0, "gt", ["en", "de", "fr"])
    assert cats.codes.tolist() == [[0, 0, 0, 1, 1]]


def test_two_languages_have_no_partial():
    acts = torch.tensor([[[1.0, 1.0, -1.0]], [[1.0, -1.0, -1.0]]])
    assert categorize_acts(acts).codes.tolist() == [[3, 1, 0]]


def test_threshold_sweep_one_comparison_per_threshold():
    acts = torch.tensor([[[0.05, 0.2, 0.45]], [[0.3, 0.3, 0.3]]])
    m = active_mask(acts, (0.0, 0.1, 0.4))
    assert m.shape == (3, 2, 1, 3)
    assert m[1].tolist() == [[[False, True, True]], [[True, True, True]]]
    assert m[2].tolist() == [[[False, False, True]], [[False, False, False]]]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), (0.0, 0.1, 0.0), ()])
def test_bad_thresholds(bad):
    with pytest.raises(MultiNeuronError):
        validate_thresholds(bad)


def test_categorize_rejects_bad_input():
    # a float mask: jaxtyping rejects it under pytest, the library's own check elsewhere
    with pytest.raises((MultiNeuronError, TypeCheckError)):
        categorize(torch.zeros(2, 1, 3))
    with pytest.raises(MultiNeuronError, match="at least 2"):
        categorize(torch.zeros(1, 1, 3, dtype=torch.bool))
    with pytest.raises(MultiNeuronError, match="language labels"):
        categorize(torch.zeros(3, 1, 3, dtype=torch.bool), ["en", "de"])


masks = st.tuples(st.integers(2, 6), st.integers(1, 3), st.integers(1, 8), st.integers(0, 2**31))


def _mask(n_lang, n_layer, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_lang, n_layer, d, generator=g) > 0.5


@settings(max_examples=60, deadline=None)
@given(masks)
def test_categories_partition_neurons(shape):
    m = _mask(*shape)
    cats = categorize(m)
    counts = cats.counts()
    assert counts.sum(-1).tolist() == [shape[2]] * shape[1]
    n = m.sum(0)
    assert torch.equal(cats.codes == Category.ALL_SHARED, n == shape[0])
    assert torch.equal(cats.codes == Category.NON_ACTIVATED, n == 0)
    assert torch.equal(cats.codes == Category.SPECIFIC, n == 1)
    # the specific language is the one active language
    spec = cats.codes == Category.SPECIFIC
    idx = cats.specific_lang[spec].long()
    assert m.permute(1, 2, 0)[spec].gather(-1, idx[:, None]).all()
    assert (cats.specific_lang[~spec] == -1).all()


@settings(max_examples=60, deadline=None)
@given(masks, st.randoms(use_true_random=False))
def test_permuting_languages_permutes_specific_labels(shape, rnd):
    m = _mask(*shape)
    perm = list(range(shape[0]))
    rnd.shuffle(perm)
    a = categorize(m)
    b = categorize(m[perm])
    assert torch.equal(a.codes, b.codes)
    inv = {old: new for new, old in enumerate(perm)}
    mapped = a.specific_lang.clone()
    for old, new in inv.items():
        mapped[a.specific_lang == old] = new
    assert torch.equal(mapped, b.specific_lang)


@settings(max_examples=60, deadline=None)
@given(masks, st.floats(-1, 1), st.floats(0, 1), st.sampled_from(["gt", "abs"]))
def test_raising_threshold_never_adds_active_neurons(shape, t, dt, crit):
    g = torch.Generator().manual_seed(shape[3])
    acts = torch.randn(shape[0], shape[1], shape[2], generator=g)
    lo = active_mask(acts, t, crit)[0]
    hi = active_mask(acts, t + dt + 1e-6, crit)[0]
    assert not (hi & ~lo).any()


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(1, 3), st.integers(1, 12), st.integers(0, 10_000))
def test_matches_notebook_reference(n_lang, n_layer, d, seed):
    from naive_reference import naive_categories

    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n_lang, n_layer, d, generator=g)
    ref = naive_categories(acts.numpy(), 0.0)
    cats = categorize_acts(acts)
    for name in ("all-shared", "partial-shared", "specific", "non-activated"):
        got = {tuple(x) for x in cats.mask(name).nonzero().tolist()}
        assert got == ref[name], name
    for lang, neurons in ref["by_language"].items():
        got = {tuple(x) for x in (cats.specific_lang == lang).nonzero().tolist()}
        assert got == neurons
