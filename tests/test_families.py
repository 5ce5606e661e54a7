"""The architecture matrix: every decoder family, a tiny random model, checked against HF.

For each dense family (tests/families.py) five checks, each against the HF model's own
modules (never against the library):

1. recorded activations equal the input of the HF down-projection;
2. per layer, the summed effective scores equal HF's direct logit attribution of that MLP
   (its write through any post-MLP norm and residual multiplier, the final norm with its scale
   held fixed, the unembedding and the model's logit scale);
3. unedited one-pass log-probs equal HF's forward, an edited row equals the same edit made by
   hand on the HF down-projection;
4. prefix-cache and folded scores equal full passes, on prompts longer than every window;
5. amplified generation equals HF generation with a hand-made hook, and no hook is left behind.

Mixture-of-experts families are refused at every neuron entry point (and their experts are the
units, see tests/test_experts.py). ``docs/models.md`` is generated from this module
(``python scripts/models_table.py``).
"""

from __future__ import annotations

import pytest
import torch
from families import FAMILIES, build_family, decoder_layers, final_norm, generate_with, sub

import tl_multineuron as tlm
from tl_multineuron.sharing.recording import encode

DENSE = [n for n, f in FAMILIES.items() if not f.moe]
MOE = [n for n, f in FAMILIES.items() if f.moe]
#: prompts longer than every sliding window (16) of the matrix
PROMPTS = [
    "The quick brown fox jumps over the lazy dog by the river bank at dawn",
    "Sharing matters: neurons across languages and tasks in LLMs",
    "Un petit chat dort sur le canapé rouge",
]
ANSWERS = [" x", " ab", " yes"]
ATOL = 2e-4


#: the two families verified on real weights run the same checks (integration tier)
REAL = {"real-gemma": ("gemma3", "gemma-3-270m"), "real-smollm2": ("llama", "smollm2-135m")}
PARAMS = [
    *DENSE,
    pytest.param("real-gemma", marks=pytest.mark.gemma),
    pytest.param("real-smollm2", marks=pytest.mark.smollm2),
]


@pytest.fixture(scope="module", params=PARAMS)
def fam(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from tl_multineuron.backends import models

    name = request.param
    if name in REAL:
        family, source = REAL[name]
        checkpoint = {"gemma-3-270m": models.embedded_checkpoint}.get(
            source, models.smollm2_checkpoint
        )
        path, model = str(checkpoint()[0]), tlm.load_model(source)
    else:
        family = name
        path = build_family(name, tmp_path_factory.mktemp(name) / "m")
        model = tlm.load_model(path)
    # the reference: the checkpoint loaded by HF alone (the bridge wraps its own copy's modules)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return family, model, ref


def _ids(model, text):
    return encode(model, text)


def _down_inputs(hf, family, ids, edit=None):
    """Run HF on ``ids`` [1, pos]; the input of every layer's down-projection ``[layer, pos,
    d_mlp]``, the down-projection outputs, the final norm's input and the logits.
    ``edit(layer, x)`` may change a down-projection's input (a hand-made intervention)."""
    fam = FAMILIES[family]
    layers = decoder_layers(hf)
    got: dict = {"in": {}, "out": {}}
    handles = []
    for i, layer in enumerate(layers):
        down = sub(layer, fam.down)

        def pre(mod, args, i=i):
            x = args[0]
            flat = x.ndim == 2  # OPT runs its MLP on [batch * pos, d_mlp]
            x = x.view(1, *x.shape) if flat else x
            if edit is not None:
                x = edit(i, x)
            got["in"][i] = x.detach()
            return (x[0] if flat else x, *args[1:])

        def post(mod, args, out, i=i):
            got["out"][i] = out.detach() if out.ndim == 3 else out.detach()[None]

        handles += [down.register_forward_pre_hook(pre), down.register_forward_hook(post)]
    norm = final_norm(hf)
    handles.append(norm.register_forward_pre_hook(lambda m, a: got.__setitem__("final", a[0])))
    try:
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0]
    finally:
        for h in handles:
            h.remove()
    acts = torch.stack([got["in"][i][0] for i in range(len(layers))])
    return acts, got, logits


# -- 1. recorded activations ------------------------------------------------------------------
def test_recorded_activations_are_the_down_projection_input(fam):
    name, model, hf = fam
    batch = tlm.tokenize(model, PROMPTS)
    for token in ("last", "all"):
        cfg = tlm.RecordingConfig(token=token, skip_bos=False)
        got = tlm.record(model, batch, cfg)
        for r, p in enumerate(PROMPTS):
            acts, _, _ = _down_inputs(hf, name, _ids(model, p))
            want = acts[:, -1] if token == "last" else acts.mean(1)
            torch.testing.assert_close(got[r].float(), want.float(), atol=ATOL, rtol=1e-4)


def test_an_attention_the_model_cannot_use_is_refused(tmp_path):
    """Gemma 2's soft-capped attention logits and GPT-OSS's sinks have no SDPA form: ``auto``
    picks eager, and asking for ``sdpa`` names the model, why, and the fix."""
    from tl_multineuron.backends.attention import attention_implementation
    from tl_multineuron.backends.experts import EXPERT_SITE

    for name, why, site in (
        ("gemma2", "soft-capped", "mlp.hook_post"),
        ("gpt_oss", "sink", EXPERT_SITE),
    ):
        model = tlm.load_model(build_family(name, tmp_path / name))
        assert attention_implementation(model, "auto") == "eager"
        rec = tlm.RecordingConfig(hook=site)
        with pytest.raises(tlm.MultiNeuronError, match=rf"{type(model.original_model).__name__}"
                           rf".*{why}.*attention='eager'"):  # fmt: skip
            tlm.record(model, tlm.tokenize(model, PROMPTS[:1]), rec, attention="sdpa")


# -- 2. effective scores = HF's direct logit attribution ------------------------------------------
def _norm_linear(norm, x):
    """The norm at input ``x`` [d_model] as a linear map with its scale held fixed, read from
    the HF module's weights; checked against the module's own output at ``x``."""
    cls = type(norm).__name__
    eps = next(float(getattr(norm, a)) for a in ("eps", "variance_epsilon") if hasattr(norm, a))
    w = norm.weight.double() if getattr(norm, "weight", None) is not None else None
    if w is not None and "Gemma" in cls:
        w = 1 + w
    layer_norm = "LayerNorm" in cls and "RMS" not in cls
    xx = x.double()
    c = xx - xx.mean() if layer_norm else xx
    s = (c.pow(2).mean() + eps).sqrt()
    bias = getattr(norm, "bias", None)
    b = bias.double() if bias is not None else 0.0

    def lin(v):
        v = v.double()
        v = v - v.mean() if layer_norm else v
        return v / s * (w if w is not None else 1.0)

    with torch.no_grad():
        torch.testing.assert_close(norm(x[None])[0].double(), lin(xx) + b, atol=1e-5, rtol=1e-5)
    return lin


def _logit_transform(hf):
    cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    mult = 1.0
    if getattr(cfg, "logits_scaling", None):
        mult /= float(cfg.logits_scaling)  # granite
    if getattr(cfg, "logit_scale", None):
        mult *= float(cfg.logit_scale)  # cohere
    cap = getattr(cfg, "final_logit_softcapping", None)
    return mult, cfg, cap


def test_effective_scores_sum_to_hf_direct_logit_attribution(fam):
    name, model, hf = fam
    fam_ = FAMILIES[name]
    mult, cfg, cap = _logit_transform(hf)
    rm = float(getattr(cfg, "residual_multiplier", 1.0) or 1.0)
    items = [
        tlm.ParallelItem(f"i{k}", {"en": p, "de": p[::-1]}, {"en": a, "de": a}, "t")
        for k, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True))
    ]
    data = tlm.ParallelDataset(tuple(items), ("en", "de"), "t")
    res = tlm.attribute(
        model, data, tlm.AttributionConfig(methods=("effective",)), keep_scores=True
    )
    eff = res.scores["effective"]  # [item, lang, layer, d_mlp]
    W_U = hf.get_output_embeddings().weight.double()
    layers = decoder_layers(hf)
    for k, it in enumerate(items):
        for j, x in enumerate(data.languages):
            ids = _ids(model, it.prompts[x])
            t = _ids(model, it.prompts[x] + it.answers[x])[len(ids)]
            acts, got, logits = _down_inputs(hf, name, ids)
            fin = _norm_linear(final_norm(hf), got["final"][0, -1])
            # the transform is HF's: its logits are the unembedded final norm, scaled (and capped)
            bias = getattr(final_norm(hf), "bias", None)
            normed = fin(got["final"][0, -1]) + (bias.double() if bias is not None else 0)
            z = normed @ W_U.T * mult
            if cap:
                z = torch.tanh(z / cap) * cap
            torch.testing.assert_close(z, logits[-1].double(), atol=1e-4, rtol=1e-4)
            for li, layer in enumerate(layers):
                down = sub(layer, fam_.down)
                a = acts[li, -1].double()
                W = down.weight.double()
                write = a @ W if W.shape[0] == a.shape[0] and not isinstance(
                    down, torch.nn.Linear) else W @ a  # fmt: skip
                if fam_.post_mlp_norm:
                    post = _norm_linear(sub(layer, fam_.post_mlp_norm), got["out"][li][0, -1])
                    write = post(write)
                dla = fin(write * rm) @ W_U[t] * mult
                torch.testing.assert_close(eff[k, j, li].double().sum(), dla, atol=1e-5, rtol=1e-4)


# -- 3. one-pass scores = HF forward, edited rows = the edit by hand ----------------------------
def _neurons(model, seed=1, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(model.cfg.n_layers, model.cfg.d_mlp, generator=g) < p


def _hf_logprob(hf, name, model, prompt, answer, edit=None):
    p = _ids(model, prompt)
    full = _ids(model, prompt + answer)
    a = full[len(p) :]
    _, _, logits = _down_inputs(hf, name, p + a[:-1], edit)
    lp = torch.log_softmax(logits.double(), -1)
    return sum(float(lp[len(p) - 1 + i, tok]) for i, tok in enumerate(a))


def test_scores_equal_hf_forward_and_a_hand_made_edit(fam):
    name, model, hf = fam
    rows = tlm.answer_rows(model, PROMPTS, ANSWERS)
    mask = _neurons(model)
    sc = tlm.score_answers(model, rows, [None, lambda b: tlm.deactivate(tlm.NeuronSet(mask))])
    for r, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        first = len(_ids(model, p)) - 1  # scope "last": the last prompt token onwards

        def edit(layer, x, first=first):
            x = x.clone()
            x[:, first:, mask[layer]] = 0
            return x

        assert abs(float(sc[0].logprob[r]) - _hf_logprob(hf, name, model, p, a)) < 1e-3
        assert abs(float(sc[1].logprob[r]) - _hf_logprob(hf, name, model, p, a, edit)) < 1e-3


# -- 4. prefix cache and folding = full passes ----------------------------------------------------
def test_prefix_cache_and_folding_equal_full_passes_past_the_window(fam):
    name, model, hf = fam
    from tl_multineuron.backends.tl_compat import sliding_window

    window = sliding_window(model)
    if window is not None and window <= 32:  # the tiny models: every prompt crosses it
        assert min(len(_ids(model, p)) for p in PROMPTS) > 2 * window
    answers = ["x", "y", "z", *ANSWERS]  # one-token answers fold, the others are tiled
    rows = tlm.answer_rows(model, PROMPTS * 2, answers)
    mask = _neurons(model, 2)
    edits = [
        None,
        lambda b: tlm.deactivate(tlm.NeuronSet(mask)),
        lambda b: tlm.amplify(tlm.NeuronSet(~mask), 2.0),
    ]
    full = tlm.score_answers(model, rows, edits, cache="none")
    auto = tlm.score_answers(model, rows, edits, cache="auto")
    for a, b in zip(auto, full, strict=True):
        torch.testing.assert_close(a.logprob, b.logprob, atol=1e-4, rtol=0)
        assert torch.equal(a.greedy_match, b.greedy_match)


# -- 5. amplified generation = a hand-made hook ---------------------------------------------------
def _hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_amplified_generation_equals_a_hand_made_hook_and_leaves_none(fam):
    from tl_multineuron.experiments.evaluation import generate_greedy

    name, model, hf = fam
    mask = _neurons(model, 3, 0.5)
    before = _hook_count(model)
    with tlm.apply(model, tlm.amplify(tlm.NeuronSet(mask), 3.0)):
        got = generate_greedy(model, PROMPTS[:2], max_new_tokens=5)
    assert _hook_count(model) == before
    fam_ = FAMILIES[name]
    for prompt, g in zip(PROMPTS[:2], got, strict=True):
        hooks = []
        for i, layer in enumerate(decoder_layers(hf)):

            def pre(mod, args, i=i):
                x = args[0].clone()
                if x.ndim == 2:  # OPT: [pos, d_mlp] for one row
                    x[-1, mask[i]] *= 3.0
                else:
                    x[:, -1, mask[i]] *= 3.0  # the last position of every step
                return (x, *args[1:])

            hooks.append((sub(layer, fam_.down), "pre", pre))
        out = generate_with(hf, _ids(model, prompt), hooks, 5)
        assert g == out, (g, out)


def test_loading_a_multimodal_class_installs_nothing(tmp_path, monkeypatch):
    """TL 4.3 runs `pip install torchvision` when it finds no processor for a multimodal
    Gemma 3; the library boots the bridge without letting it (the text model needs none)."""
    import subprocess

    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise AssertionError(f"a subprocess ran while loading: {a}")

    for fn in ("check_call", "run", "call", "Popen"):
        monkeypatch.setattr(subprocess, fn, refuse)
    model = tlm.load_model(build_family("gemma3_conditional", tmp_path / "m"))
    assert not calls and model.cfg.n_layers == 2


def test_output_transforms_in_attribution_meta_and_a_nonlinear_one_refused(tmp_path):
    from tl_multineuron.backends.logits import logit_slope

    model = tlm.load_model(build_family("granite", tmp_path / "g"))
    data = tlm.ParallelDataset(
        (tlm.ParallelItem("i", {"en": PROMPTS[0], "de": PROMPTS[1]}, {"en": " a", "de": " b"}),),
        ("en", "de"),
        "t",
    )
    meta = tlm.attribute(model, data).stats.meta["norms"]
    assert meta["logit_scale"] == pytest.approx(1 / 4.0)
    assert meta["mlp_residual_scale"] == pytest.approx([0.3, 0.3])

    class Squash:
        def apply_output_logits_transform(self, z):
            return z**3

    object.__setattr__(model, "adapter", Squash())
    with pytest.raises(tlm.MultiNeuronError, match="not a scale near 0"):
        logit_slope(model)
