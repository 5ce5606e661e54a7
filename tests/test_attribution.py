import pytest
import torch
from helpers import last_position_logprob_fn, tiny_model, toy_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_multineuron as tlm
from tl_multineuron import MultiNeuronError
from tl_multineuron.attribution.analysis import AttributionConfig, attribute
from tl_multineuron.attribution.scores import (
    answer_token_ids,
    contribution_scores,
    effective_scores,
    ig_alphas,
    integrated_gradients,
)
from tl_multineuron.attribution.stats import AttributionStats, ScoreStats
from tl_multineuron.backends.weights import ModelWeights, model_weights
from tl_multineuron.sharing.masks import resolve_k, topk_mask
from tl_multineuron.sharing.recording import encode as encode_prompt


@pytest.fixture(scope="module")
def model():
    return tiny_model("gated", seed=1)


def _weights(W_out, W_U, tied=False):
    return ModelWeights(W_out, W_U, W_out.norm(dim=-1), W_U.T.clone() if tied else None, tied)


def test_contribution_and_effective_by_hand():
    # 1 layer, 3 neurons, d_model 2, vocab 2
    W_out = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]])
    W_U = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = _weights(W_out, W_U)
    acts = torch.tensor([[[2.0, -1.0, 0.5]]])  # [batch, layer, d_mlp]
    assert contribution_scores(acts, w).tolist() == [[[10.0, 1.0, 1.0]]]
    # token 1: W_out rows . e_1 = (4, 0, 2); times a
    eff = effective_scores(acts, torch.tensor([1]), w)
    assert eff.tolist() == [[[8.0, -0.0, 1.0]]]
    eff0 = effective_scores(acts, torch.tensor([0]), w)
    assert eff0.tolist() == [[[6.0, -1.0, 0.0]]]
    with pytest.raises(MultiNeuronError, match="tied"):
        effective_scores(acts, torch.tensor([1]), w, use_embedding=True)
    wt = _weights(W_out, W_U, tied=True)
    assert torch.equal(effective_scores(acts, torch.tensor([1]), wt, use_embedding=True), eff)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 10), st.integers(0, 5))
def test_score_properties(seed, scale, row):
    g = torch.Generator().manual_seed(seed)
    W_out = torch.randn(2, 6, 4, generator=g)
    W_U = torch.randn(4, 5, generator=g)
    acts = torch.randn(3, 2, 6, generator=g)
    acts[:, :, row] = 0.0
    w = _weights(W_out, W_U)
    c = contribution_scores(acts, w)
    e = effective_scores(acts, torch.tensor([0, 1, 4]), w)
    assert (c[:, :, row] == 0).all() and (e[:, :, row] == 0).all()
    W2 = W_out.clone()
    W2[1, (row + 1) % 6] *= scale
    c2 = contribution_scores(acts, _weights(W2, W_U))
    torch.testing.assert_close(c2[:, 1, (row + 1) % 6], c[:, 1, (row + 1) % 6] * scale)


def test_weights_are_unprocessed_and_cached(model):
    w = model_weights(model)
    assert w is model_weights(model)
    assert torch.equal(w.W_out, model.W_out.detach())
    assert torch.equal(w.out_norms, model.W_out.detach().norm(dim=-1))
    assert not w.tied


def test_topk_and_k_validation():
    s = torch.tensor([[[0.1, 5.0, 3.0, -1.0]]])
    assert topk_mask(s, 2).tolist() == [[[False, True, True, False]]]
    assert topk_mask(s, 0.5).sum() == 2
    for bad in (0, 5, -1, 1.5, 0.0, True):
        with pytest.raises(MultiNeuronError):
            resolve_k(bad, 4)


def test_ig_alphas():
    for m in (
        "gausslegendre",
        "riemann_left",
        "riemann_right",
        "riemann_middle",
        "riemann_trapezoid",
    ):
        a, w = ig_alphas(7, m)
        assert abs(float(w.sum()) - 1) < 1e-12 and (a >= 0).all() and (a <= 1).all()
    with pytest.raises(MultiNeuronError, match="steps"):
        ig_alphas(0)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
@pytest.mark.parametrize("target", ["logprob", "logit"])
def test_ig_completeness(model, method, target):
    r = integrated_gradients(model, "hello there", 7, 1, steps=64, method=method, target=target)
    assert r.relative_gap < 1e-2
    assert r.attributions.shape == (model.cfg.d_mlp,)


def test_ig_matches_captum(model):
    from captum.attr import IntegratedGradients

    prompt, tok, layer = "hello world", 5, 1
    fwd = last_position_logprob_fn(model, prompt, layer, tok)

    a = tlm.record(model, tlm.tokenize(model, [prompt]))[0, layer].clone()
    for base in (
        torch.zeros_like(a),
        torch.randn(a.shape, generator=torch.Generator().manual_seed(0)),
    ):
        ref = IntegratedGradients(fwd).attribute(
            a[None], baselines=base[None], n_steps=20, method="gausslegendre"
        )[0]
        ours = integrated_gradients(model, prompt, tok, layer, steps=20, baseline=base)
        torch.testing.assert_close(ours.attributions, ref.float(), rtol=1e-4, atol=1e-6)


def test_ig_hooks_removed_on_error(model):
    def n_hooks():
        return sum(len(hp._forward_hooks) for hp in model.hook_dict.values())

    before = n_hooks()
    with pytest.raises(MultiNeuronError):
        integrated_gradients(model, "hi", 5, 0, baseline=torch.zeros(3))
    assert n_hooks() == before
    with pytest.raises(MultiNeuronError, match="layer 9"):
        integrated_gradients(model, "hi", 5, 9)


def test_answer_tokens(model):
    with pytest.raises(MultiNeuronError, match="item 'q', language 'de': the answer '' tokenizes"):
        answer_token_ids(model, ["ab"], [""], ["item 'q', language 'de'"])
    ids = answer_token_ids(model, ["ab"], [" c"], ["x"])
    assert ids.tolist() == [encode_prompt(model, " c", prepend_bos=False)[0]]


def test_attribute_dataset_joins_categories(model):
    ds = toy_dataset(5, ("en", "de", "fr"))
    cfg = AttributionConfig(
        methods=("contribution", "effective", "ig"), k=4, ig_steps=8, ig_layers=(0, 1), batch_size=2
    )
    res = attribute(model, ds, cfg, keep_scores=True)
    st_ = res.stats
    for m in ("contribution", "effective", "ig"):
        s = st_[m]
        assert s.n_items == 5
        # top-K counts over categories add up to K per item and language
        assert (s.topk_counts.sum(-1) == 5 * 4).all()
        assert (s.count.sum(-1) == 5 * model.cfg.d_mlp).all()
    assert st_["ig"].n_gaps == 5 * 3 * 2 and st_["ig"].rel_gap_max < 0.1
    # contribution by category recomputed by hand for the kept scores
    acts = torch.cat([a for _, a in tlm.iter_dataset(model, ds, batch_size=5)])
    codes = tlm.categorize_acts(acts).codes
    c = res.scores["contribution"]
    torch.testing.assert_close(c, contribution_scores(acts, model_weights(model)))
    allsh = (codes == 3).unsqueeze(1).expand_as(c)
    # sums are kept on a 2**-20 grid per batch (exact, order-free merges): within a grid step
    want = (c.double() * allsh).sum((0, -1))
    torch.testing.assert_close(st_["contribution"].mass[..., 3], want, rtol=0, atol=2e-6)
    df = st_.to_frame()
    assert {"method", "language", "layer", "category", "topk_share", "mass_share"} <= set(df)


def test_attribute_save_load_merge(model, tmp_path):
    ds = toy_dataset(4)
    cfg = AttributionConfig(k=3, batch_size=2)
    whole = attribute(model, ds, cfg).stats
    a = attribute(model, ds.head(2), cfg).stats
    b = attribute(model, ds.slice(2), cfg).stats
    m = a.merge(b)
    for k in whole.methods:
        assert torch.equal(m[k].topk_counts, whole[k].topk_counts)
        torch.testing.assert_close(m[k].mass, whole[k].mass)
    whole.save(tmp_path / "a.pt")
    back = AttributionStats.load(tmp_path / "a.pt")
    assert all(back[k].equals(whole[k]) for k in whole.methods) and back.meta == whole.meta


def test_attribute_bad_input(model):
    ds = toy_dataset(2, answers=False)
    with pytest.raises(MultiNeuronError, match="has no answer for language 'en'"):
        attribute(model, ds, AttributionConfig(methods=("effective",), k=2))
    with pytest.raises(MultiNeuronError, match="K=999"):
        attribute(model, toy_dataset(2), AttributionConfig(k=999))
    with pytest.raises(MultiNeuronError, match="steps"):
        AttributionConfig(ig_steps=0)
    with pytest.raises(MultiNeuronError, match="tied"):
        attribute(
            model,
            toy_dataset(2),
            AttributionConfig(methods=("effective",), k=2, use_embedding=True),
        )
    bad = type(ds)(
        (tlm.ParallelItem("e", {"en": "x", "de": "y"}, {"en": " a", "de": " b"}),), ("en", "de")
    )
    with pytest.raises(MultiNeuronError, match="IG layer"):
        attribute(model, bad, AttributionConfig(methods=("ig",), k=2, ig_layers=(7,)))

    class NoUnembed:
        cfg = model.cfg
        W_out = model.W_out

        def run_with_hooks(self):
            pass

        def hooks(self):
            pass

        @property
        def W_U(self):
            raise AttributeError("no unembed")

    with pytest.raises(MultiNeuronError, match="unembedding"):
        model_weights(NoUnembed())


def test_score_stats_shape_check():
    s = ScoreStats("contribution", ("a", "b"), (0,), 2)
    with pytest.raises(MultiNeuronError, match="do not match"):
        s.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 1, 4, dtype=torch.int8))
