"""Norm-aware scores: the reduction without norms, the layer-sum identity with them, probing,
refusals and detection of processed weights."""

from __future__ import annotations

import pytest
import torch
from helpers import no_norm_model, tiny_gemma_dir, tiny_hf_dir, tiny_model

from tl_multineuron import MultiNeuronError, load_model
from tl_multineuron.attribution.scores import contribution_scores, effective_scores
from tl_multineuron.backends.norms import detect_processing, norm_path, probe_norm
from tl_multineuron.backends.weights import model_weights
from tl_multineuron.sharing.recording import encode

PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def gemma_tiny(tmp_path_factory):
    return load_model(tiny_gemma_dir(tmp_path_factory.mktemp("tg")))


@pytest.fixture(scope="module")
def gpt2_tiny(tmp_path_factory):
    return load_model(tiny_hf_dir(tmp_path_factory.mktemp("g2")))


def _last(model, names):
    ids = torch.tensor([encode(model, PROMPT)])
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    return logits[0, -1], {n: cache[n][0, -1] for n in names}


def _acts_and_final(model):
    L = model.cfg.n_layers
    names = [f"blocks.{x}.mlp.hook_post" for x in range(L)]
    names += [f"blocks.{x}.hook_mlp_out" for x in range(L)]
    names += [f"blocks.{L - 1}.hook_resid_post"]
    logits, c = _last(model, names)
    acts = torch.stack([c[f"blocks.{x}.mlp.hook_post"] for x in range(L)])[None]
    return logits, c, acts


def test_no_norm_reduces_to_the_paper_formulas():
    model = no_norm_model()
    w = model_weights(model)
    assert w.norms.trivial and not w.has_post_norm and not w.has_final_norm
    acts = torch.randn(3, 2, 24)
    tok = torch.tensor([5, 9, 100])
    assert torch.equal(contribution_scores(acts, w), acts.abs() * model.W_out.norm(dim=-1))
    plain = acts * torch.einsum("lnd,bd->bln", model.W_out, model.W_U[:, tok].T)
    torch.testing.assert_close(effective_scores(acts, tok, w), plain, rtol=0, atol=0)


@pytest.mark.parametrize("which", ["gemma_tiny", "gpt2_tiny", "gated_native"])
def test_layer_sum_equals_mlp_direct_logit_attribution(which, request):
    model = tiny_model("gated") if which == "gated_native" else request.getfixturevalue(which)
    w = model_weights(model)
    logits, c, acts = _acts_and_final(model)
    L = model.cfg.n_layers
    t = int(logits.argmax())
    final = w.norms.final.scale(c[f"blocks.{L - 1}.hook_resid_post"][None])
    eff = effective_scores(acts, torch.tensor([t]), w, final_scale=final)[0].double()
    # independently: the layer's MLP output as the model adds it to the residual (after any
    # post-MLP norm), through the final norm with its scale taken from the cached residual
    ln = model.ln_final
    scale = c[f"blocks.{L - 1}.hook_resid_post"].double()
    if w.norms.final.kind == "ln":
        scale = scale - scale.mean()
    scale = (scale.pow(2).mean() + w.norms.final.eps).sqrt()
    for x in range(L):
        out = c[f"blocks.{x}.hook_mlp_out"].double()
        if w.norms.final.kind == "ln":
            out = out - out.mean()
        gain = ln(torch.ones(1, 1, model.cfg.d_model)).double()[0, 0] * (
            (1 + w.norms.final.eps) ** 0.5 if w.norms.final.kind == "rms" else 1.0
        )
        if w.norms.final.kind == "ln":  # gain of a LayerNorm: its weight
            gain = ln._original_component.weight.double()
        dla = (out * gain / scale) @ model.W_U[:, t].double()
        torch.testing.assert_close(eff[x].sum(), dla, rtol=1e-4, atol=1e-6)


def test_post_norm_changes_contribution_and_matches_the_write(gemma_tiny):
    w = model_weights(gemma_tiny)
    assert w.has_post_norm and w.norms.post_mlp[0].kind == "rms"
    _, c, acts = _acts_and_final(gemma_tiny)
    contrib = contribution_scores(acts, w)[0]
    for x in range(gemma_tiny.cfg.n_layers):
        # each neuron's write through the post-MLP norm, scale held fixed: its norm
        hf = gemma_tiny.original_model.model.layers[x]
        h = acts[0, x, :, None] * gemma_tiny.W_out[x]
        total = acts[0, x] @ gemma_tiny.W_out[x]
        rms = (total.double().pow(2).mean() + hf.post_feedforward_layernorm.eps).sqrt()
        g = 1 + hf.post_feedforward_layernorm.weight.double()
        expect = (h.double() * g / rms).norm(dim=-1)
        torch.testing.assert_close(contrib[x].double(), expect, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(contrib[x], acts[0, x].abs() * w.out_norms[x])


def test_final_scale_required_with_a_final_norm(gemma_tiny):
    w = model_weights(gemma_tiny)
    with pytest.raises(MultiNeuronError, match="final norm"):
        effective_scores(torch.randn(1, 2, 48), torch.tensor([3]), w)


class _Cube(torch.nn.Module):
    def forward(self, x):
        return x**3


class _Scale(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 2, d))
        self.eps = 1e-6

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.weight)


def test_probe_reads_gains_and_refuses_unknown_norms():
    spec = probe_norm(_Scale(8), 8, "test")
    assert spec.kind == "rms"
    torch.testing.assert_close(spec.gain, 1 + torch.linspace(0.5, 2, 8), rtol=1e-5, atol=1e-6)
    ln = torch.nn.LayerNorm(7)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    spec = probe_norm(ln, 7, "ln")
    assert spec.kind == "ln"
    torch.testing.assert_close(spec.gain, ln.weight.detach(), rtol=1e-4, atol=1e-5)
    assert probe_norm(torch.nn.Identity(), 8, "id").kind == "none"
    with pytest.raises(MultiNeuronError, match=r"does not know the norm at x \(_Cube\)"):
        probe_norm(_Cube(), 8, "x")


def test_unknown_final_norm_refused_by_the_scorer():
    model = tiny_model("gated", seed=3)
    model.ln_final._original_component = _Cube()
    orig = model.ln_final.forward
    model.ln_final.forward = lambda x, *a, **k: _Cube()(x)
    try:
        with pytest.raises(MultiNeuronError, match="does not know the norm at ln_final"):
            norm_path(model)
    finally:
        model.ln_final.forward = orig


def test_processed_weights_are_named():
    model = tiny_model("gelu", seed=4)
    assert detect_processing(model) == ()
    with torch.no_grad():
        for b in model.blocks:
            W = b.mlp.out.weight  # [d_model, d_mlp] (nn.Linear)
            W -= W.mean(0, keepdim=True)
    found = detect_processing(model)
    assert any("center_writing_weights" in f for f in found)


def test_unknown_norm_layout_refused(tmp_path):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    model = load_model(tiny_gemma_dir(tmp_path / "g"))
    model.blocks[0]._original_component.sandwich_norm = Gemma3RMSNorm(32)
    with pytest.raises(MultiNeuronError, match=r"norm layout.*sandwich_norm \(Gemma3RMSNorm\)"):
        norm_path(model)


def test_compatibility_mode_is_named_in_attribution_meta(tmp_path):
    from helpers import toy_dataset

    from tl_multineuron import AttributionConfig, attribute

    model = load_model(tiny_gemma_dir(tmp_path / "g"))
    model.enable_compatibility_mode()
    st = attribute(model, toy_dataset(2), AttributionConfig(k=3, n_boot=0)).stats
    found = st.meta["norms"]["weight_processing"]
    assert any("compatibility mode" in f for f in found)


def test_left_riemann_through_a_post_norm_warns(tmp_path):
    from helpers import toy_dataset

    from tl_multineuron import AttributionConfig, attribute

    model = load_model(tiny_gemma_dir(tmp_path / "g"))
    cfg = AttributionConfig.dai(ig_layers=(0,), n_boot=0)
    with pytest.warns(UserWarning, match="1/sqrt"):
        st = attribute(model, toy_dataset(1), cfg).stats
    assert "ig_warning" in st.meta
