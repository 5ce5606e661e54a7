"""TransformerLens 3.x (HookedTransformer) and SAELens: the adapter's generation, SAE features
as a site (hand-checkable categories on a tiny model with a random SAE), feature-level
interventions and experiments, and the CLI with ``--sae`` (marked ``tl3``: CI runs them in the
TL 3.x environment that SAELens installs; under TL 4.x they skip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import byte_tokenizer, tiny_hf_dir, tiny_llama_dir, toy_dataset

import tl_multineuron as tlm
from tl_multineuron.backends.tl_compat import cached_greedy, check_tl_version, tl_line
from tl_multineuron.errors import MultiNeuronError
from tl_multineuron.sharing.recording import encode as encode_prompt

pytestmark = pytest.mark.tl3
if tl_line() != 3:
    pytest.skip("TransformerLens 3.x tests (run in .venv-tl3)", allow_module_level=True)
sae_lens = pytest.importorskip("sae_lens")

SITE = "hook_resid_post.hook_sae_acts_post"
D_SAE = 20


def at(hook: str) -> tlm.AnalysisConfig:
    return tlm.AnalysisConfig(recording=tlm.RecordingConfig(hook=hook))


def tiny_hooked(n_layers: int = 3, saes: bool = True, seed: int = 0):
    """A random HookedTransformer (HookedSAETransformer when ``saes``) with rotary positions
    and a gated MLP, and the byte tokenizer."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=16,
        n_ctx=64,
        d_head=4,
        n_heads=4,
        d_mlp=24,
        d_vocab=259,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=4,
        seed=seed,
        device="cpu",
    )
    cls = sae_lens.HookedSAETransformer if saes else HookedTransformer
    model = cls(cfg, tokenizer=byte_tokenizer())
    model.eval()
    return model


def random_sae(layer: int = 1, d_in: int = 16, seed: int = 0):
    """A random SAE on ``blocks.{layer}.hook_resid_post``; feature 0 always fires (bias +50,
    no input weight) and feature 1 never does (bias -50)."""
    cfg = sae_lens.StandardSAEConfig(d_in=d_in, d_sae=D_SAE, dtype="float32", device="cpu")
    cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    sae = sae_lens.SAE.from_dict(cfg.to_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, D_SAE, generator=g))
        sae.W_dec.copy_(torch.randn(D_SAE, d_in, generator=g) * 0.1)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g) * 0.1)
        sae.W_enc[:, :2] = 0
        sae.b_enc[0], sae.b_enc[1] = 50.0, -50.0
    return sae


@pytest.fixture(scope="module")
def sae_model():
    model = tiny_hooked()
    sae = random_sae()
    assert tlm.attach_sae(model, sae) == SITE
    return model, sae


def test_version_range_errors_name_both():
    assert check_tl_version("3.9.0") == 3 and check_tl_version("4.3.1") == 4
    for bad in ("2.16.1", "3.8.0", "4.2.0", "5.0.0", "dev"):
        with pytest.raises(MultiNeuronError, match=rf"{bad} is installed.*3\.x from 3\.9"):
            check_tl_version(bad)


@pytest.mark.parametrize("hooks", [False, True])
def test_cached_generation_equals_full_passes(hooks):
    """The adapter's KV-cached greedy loop on left-padded rows of different lengths equals
    greedy decoding by full forward passes of each prompt alone (also under an edit)."""
    model = tiny_hooked(saes=False)
    prompts = ["ab", "hello there", "x"]
    encode_prompt(model, prompts[0])
    from tl_multineuron.experiments.evaluation import left_pad

    toks, mask = left_pad(model, prompts)
    edit = [("blocks.1.mlp.hook_post", lambda a, hook: a * 3)] if hooks else []
    with torch.inference_mode(), model.hooks(fwd_hooks=edit):
        got = cached_greedy(model, toks, mask, 6)[:, toks.shape[1] :]
        for r, p in enumerate(prompts):
            ids = torch.tensor([encode_prompt(model, p)])
            for _ in range(6):
                ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
            assert got[r].tolist() == ids[0, -6:].tolist(), p


def test_blocked_metrics_and_per_row_generation_on_the_hooked_transformer(monkeypatch):
    """On TL 3.x too: the vocabulary-blocked scorer metrics equal the whole-vocabulary path
    (with the config's soft-cap), and generations under per-row masks equal one generation per
    mask under ``apply``."""
    from tl_multineuron.experiments import answer_metrics as am
    from tl_multineuron.experiments.evaluation import generate_greedy
    from tl_multineuron.experiments.specificity import generate_under_masks

    model = tiny_hooked(saes=False)
    model.cfg.output_logits_soft_cap = 2.0
    monkeypatch.setattr(am, "BLOCK", 50)
    monkeypatch.setattr(am, "ROWS", 7)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, 16, generator=g) * 4
    gold = torch.randint(0, 259, (30,), generator=g)
    first = torch.rand(30, generator=g) < 0.5
    assert am.linear_unembedding(model) is not None
    got, want = am.answer_metrics(model, h, gold, first), am._full(model, h, gold, first, 64)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(got[1:], want[1:], strict=True))
    model.cfg.output_logits_soft_cap = -1.0
    masks = [None, torch.rand(3, 24, generator=g) < 0.5, torch.ones(3, 24, dtype=torch.bool)]
    prompts = ["ab", "hello there", "x"]
    rows = generate_under_masks(model, prompts, masks, max_new_tokens=4, batch_size=4)
    for m, got_m in zip(masks, rows, strict=True):
        edits = [] if m is None else [tlm.Intervention(tlm.NeuronSet(m), "zero", positions="all")]
        with tlm.apply(model, *edits):
            assert got_m == generate_greedy(model, prompts, 4, batch_size=3)
    assert rows[2] != rows[0]


def test_feature_site_categories_by_hand(sae_model):
    """Feature activations at the SAE site equal the SAE's own encoding of the residual (read
    by a plain HookedTransformer with the same weights); feature 0 is all-shared on every
    item, feature 1 never activates, and every other category is the count of languages."""
    model, sae = sae_model
    ds = toy_dataset(4, ("en", "de", "fr"))
    cfg = tlm.AnalysisConfig(recording=tlm.RecordingConfig(hook=SITE), batch_size=2)
    res = tlm.analyze(model, ds, cfg, keep_items=True)
    stats = res.stats
    assert (stats.n_layers, stats.d_mlp) == (1, D_SAE) and stats.meta["layers"] == [1]
    plain = tiny_hooked(saes=False)
    plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if "hook_resid_post" not in k}
    )
    feats = []
    for it in ds.items:
        row = []
        for x in ds.languages:
            ids = torch.tensor([encode_prompt(plain, it.prompts[x])])
            _, cache = plain.run_with_cache(ids, names_filter="blocks.1.hook_resid_post")
            row.append(sae.encode(cache["blocks.1.hook_resid_post"][0, -1]))
        feats.append(torch.stack(row))
    feats = torch.stack(feats).detach()  # [item, lang, feature]
    n_active = (feats > 0).sum(1)
    C = tlm.Category
    expect = torch.full_like(n_active, int(C.PARTIAL_SHARED))
    expect[n_active == 3] = int(C.ALL_SHARED)
    expect[n_active == 1] = int(C.SPECIFIC)
    expect[n_active == 0] = int(C.NON_ACTIVATED)
    codes = res.categories.codes[:, 0].long()  # [item, feature]
    assert torch.equal(codes, expect) and len(codes.unique()) == 4
    assert (codes[:, 0] == C.ALL_SHARED).all() and (codes[:, 1] == C.NON_ACTIVATED).all()
    assert stats.layer_fractions().shape == (1, 4)


def test_feature_deactivation_edits_only_the_features(sae_model):
    """Deactivating the all-shared features at the last position changes the next block's
    residual input by exactly -sum_f a_f W_dec[f] there (the error term keeps the rest)."""
    model, sae = sae_model
    ds = toy_dataset(4, ("en", "de", "fr"))
    stats = tlm.analyze(
        model, ds, tlm.AnalysisConfig(recording=tlm.RecordingConfig(hook=SITE))
    ).stats
    shared = tlm.NeuronSet.from_stats(stats, "all-shared", 1.0)
    assert shared.site == SITE and shared.layers == (1,) and shared.mask[0, 0]
    ids = torch.tensor([encode_prompt(model, ds.items[0].prompts["en"])])
    names = lambda n: n in (f"blocks.1.{SITE}", "blocks.2.hook_resid_pre")  # noqa: E731
    _, clean = model.run_with_cache(ids, names_filter=names)
    with tlm.apply(model, tlm.deactivate(shared)):
        _, edited = model.run_with_cache(ids, names_filter=names)
    a = clean[f"blocks.1.{SITE}"][0, -1]
    assert (edited[f"blocks.1.{SITE}"][0, -1][shared.mask[0]] == 0).all()
    delta = edited["blocks.2.hook_resid_pre"][0] - clean["blocks.2.hook_resid_pre"][0]
    want = -(a * shared.mask[0]) @ sae.W_dec.detach()
    torch.testing.assert_close(delta[-1], want, rtol=1e-4, atol=1e-5)
    assert delta[:-1].abs().max() == 0
    with pytest.raises(MultiNeuronError, match="layers \\[5\\] do not exist"):
        tlm.deactivate(tlm.NeuronSet(shared.mask, "s", SITE, (5,))).fwd_hooks(model)


def test_feature_experiment_and_set_file(sae_model, tmp_path):
    model, _ = sae_model
    ds = toy_dataset(8, ("en", "de", "fr"))
    conds = [
        tlm.Condition("none"),
        tlm.Condition("all-shared", "zero", mode="dynamic"),
        tlm.Condition("random", "zero", mode="dynamic", seed=0),
    ]
    rec = tlm.RecordingConfig(hook=SITE)
    rows = tlm.run_experiment(model, ds.slice(4), conds, ds.slice(0, 4), recording=rec)
    sizes = rows[rows.target != "none"].groupby("condition").set_size.mean()
    assert sizes.min() >= 1 and sizes.max() < D_SAE  # features, not the 24 MLP neurons
    assert rows.groupby("condition").size().nunique() == 1
    lp = rows.pivot_table(index=["item_id", "language"], columns="target", values="logprob")
    assert (lp["all-shared"] - lp["none"]).abs().max() > 1e-4  # the features were edited
    s = tlm.NeuronSet(torch.eye(1, D_SAE, dtype=torch.bool), "f0", SITE, (1,))
    s.save(tmp_path / "set.json")
    back = tlm.NeuronSet.load(tmp_path / "set.json")
    assert torch.equal(back.mask, s.mask) and (back.site, back.layers) == (SITE, (1,))
    assert back.indices() == {1: [0]}


def test_sae_errors(sae_model, tmp_path):
    model, _ = sae_model
    with pytest.raises(MultiNeuronError, match="'blocks.7.hook_resid_post' is not on the model"):
        tlm.attach_sae(model, random_sae(layer=7))
    with pytest.raises(MultiNeuronError, match="d_in=8"):
        tlm.attach_sae(model, random_sae(layer=0, d_in=8))
    with pytest.raises(MultiNeuronError, match="cannot carry SAEs"):
        tlm.attach_sae(tiny_hooked(saes=False), random_sae())
    ds = toy_dataset(2, ("en", "de"))
    with pytest.raises(MultiNeuronError, match="no layer has the SAE site"):
        tlm.analyze(tiny_hooked(), ds, at(SITE))
    with pytest.raises(MultiNeuronError, match="needs a unit dimension"):
        tlm.analyze(model, ds, at("hook_resid_pre"))
    with pytest.raises(MultiNeuronError, match="RELEASE:SAE_ID"):
        tlm.load_sae("no-such-thing")
    with pytest.raises(MultiNeuronError, match="cannot convert the model"):
        tlm.load_model(tiny_hf_dir(tmp_path / "gpt2"))


def test_cli_sae_site_analyze_intervene_report(tmp_path):
    """A local HF directory (TL 3.x reads its config) with a saved random SAE: analyze at the
    feature site, an intervention experiment on features, and the report."""
    from tl_multineuron.cli import main

    model_dir = tiny_llama_dir(tmp_path / "tiny")  # TL 3.x reads names with "llama" as Llama-1
    sae = random_sae(layer=1, d_in=32)
    sae.save_model(str(tmp_path / "sae"))
    data = tmp_path / "d.jsonl"
    ds = toy_dataset(10, ("en", "de", "fr"))
    ds.to_jsonl(data)
    common = ["--model", model_dir, "--data", str(data), "--no-progress"]
    sae_args = ["--sae", str(tmp_path / "sae"), "--hook", SITE]
    out = tmp_path / "run"
    assert main(["analyze", *common, *sae_args, "--out", str(out)]) == 0
    stats = tlm.SharingStats.load(out / "stats.pt")
    assert (stats.n_layers, stats.d_mlp) == (1, D_SAE)
    iv = tmp_path / "iv"
    args = ["intervene", *common, *sae_args, "--eval-items", "4", "--calibration", "6"]
    args += ["--modes", "dynamic", "--seeds", "0,1", "--alphas", "2", "--no-matched"]
    assert main([*args, "--allow-empty", "--out", str(iv)]) == 0
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()


@pytest.mark.gemma
def test_cross_line_agreement_on_gemma(tmp_path):
    """The embedded model under TL 3.x (this process's line) and TL 4.x (the interpreter in
    TLMN_TL4_PYTHON, which scripts/test.sh sets): categories agree on >= 99.99% of neurons and
    attribution scores to 1e-4 relative (scripts/cross_line.py, 8 items x 8 languages)."""
    import os
    import subprocess
    import sys

    other = os.environ.get("TLMN_TL4_PYTHON")
    if not other:
        pytest.skip("set TLMN_TL4_PYTHON to a TL 4.x interpreter (scripts/test.sh does)")
    script = str(Path(__file__).parents[1] / "scripts" / "cross_line.py")
    files = {}
    for name, py in (("tl3", sys.executable), ("tl4", other)):
        files[name] = tmp_path / f"{name}.pt"
        cmd = [py, script, "save", str(files[name]), "--limit", "8", "--ig-items", "1"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    a, b = (torch.load(files[k], weights_only=False) for k in ("tl3", "tl4"))
    assert (a["kind"], b["kind"]) == ("HookedTransformer", "TransformerBridge")
    assert (a["codes"] == b["codes"]).double().mean() >= 0.9999
    for key in ("acts", "contribution", "effective", "ig"):
        x, y = a[key].double(), b[key].double()
        assert (x - y).abs().max() <= 1e-4 * y.abs().max(), key


def test_moe_blocks_are_refused_on_the_hooked_transformer():
    """TL 3.x's MoE blocks: neuron sites refused as under the bridge; the expert site too
    (its router hook holds the softmax before the top-k: every expert > 0)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tl_multineuron.backends.experts import EXPERT_SITE

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=24, d_vocab=259, n_ctx=64,
        act_fn="silu", gated_mlp=True, normalization_type="RMS", num_experts=4,
        experts_per_token=2, positional_embedding_type="rotary", rotary_dim=4,
    )  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=byte_tokenizer())
    batch = tlm.tokenize(model, ["dog cat sun 1"])
    with pytest.raises(MultiNeuronError, match=rf"mixture-of-experts.*{EXPERT_SITE}"):
        tlm.record(model, batch)
    with pytest.raises(MultiNeuronError, match="softmax before the top-k"):
        tlm.record(model, batch, tlm.RecordingConfig(hook=EXPERT_SITE))
