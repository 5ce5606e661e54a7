"""Mixture-of-experts families: neuron sites refused at every entry point; experts as units
(routing read from the router, checked against HF's own router) with router-weight
interventions checked against a hand-made HF hook; Qwen-MoE's shared-expert neurons."""

from __future__ import annotations

import pytest
import torch
from families import FAMILIES, build_family, decoder_layers, generate_with, sub
from test_families import ANSWERS, PROMPTS, _ids

import tl_multineuron as tlm
from tl_multineuron.backends.experts import EXPERT_SITE, SHARED_EXPERT_SITE
from tl_multineuron.experiments.evaluation import generate_greedy

MOE = [n for n, f in FAMILIES.items() if f.moe]


@pytest.fixture(scope="module", params=MOE)
def moe(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    name = request.param
    path = build_family(name, tmp_path_factory.mktemp(name) / "m")
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return name, tlm.load_model(path), ref


def _data(n=3):
    items = [
        tlm.ParallelItem(f"i{k}", {"en": p, "de": p[::-1]}, {"en": a, "de": a}, "t")
        for k, (p, a) in enumerate(zip(PROMPTS[:n], ANSWERS[:n], strict=True))
    ]
    return tlm.ParallelDataset(tuple(items), ("en", "de"), "t")


# -- refusals ---------------------------------------------------------------------------------
def test_every_neuron_entry_point_refuses_moe_blocks(moe, tmp_path):
    name, model, _ = moe
    data = _data(2)
    mask = torch.ones(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
    rows = tlm.answer_rows(model, PROMPTS[:2], ANSWERS[:2])
    calls = {
        "record": lambda: tlm.record(model, tlm.tokenize(model, PROMPTS[:1])),
        "analyze": lambda: tlm.analyze(model, data),
        "gate site": lambda: tlm.analyze(
            model, data, tlm.AnalysisConfig(recording=tlm.RecordingConfig(hook="gate"))
        ),
        "attribute": lambda: tlm.attribute(model, data),
        "attribute ig": lambda: tlm.attribute(
            model, data, tlm.AttributionConfig(methods=("ig",), ig_layers=(0,))
        ),
        "integrated_gradients": lambda: tlm.integrated_gradients(model, PROMPTS[0], 5, 0),
        "experiment": lambda: tlm.run_experiment(model, data, tlm.paper_conditions()[:2], data),
        "scored edit": lambda: tlm.score_answers(
            model, rows, [lambda b: tlm.deactivate(tlm.NeuronSet(mask))]
        ),
        "generation": lambda: _generate(model, tlm.amplify(tlm.NeuronSet(mask), 2.0)),
        "results dir": lambda: tlm.run_analysis(
            model, data, tmp_path / "run", tlm.AnalysisConfig(), {"task": "t"}
        ),
    }
    for what, call in calls.items():
        with pytest.raises(tlm.MultiNeuronError, match="mixture-of-experts") as e:
            call()
        assert EXPERT_SITE in str(e.value), what
        assert model.cfg.model_name in str(e.value) or "For" in str(e.value), what
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.pt"))
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def _generate(model, iv):
    with tlm.apply(model, iv):
        return generate_greedy(model, PROMPTS[:2], max_new_tokens=4)


# -- experts as units -----------------------------------------------------------------------------
def _router(layer):
    for n in ("gate", "router"):
        r = getattr(layer.mlp, n, None)
        if r is not None:
            return r
    raise AttributeError("no router")


def _hf_routing(ref, ids, edit=None):
    """Per layer ``[pos, n_experts]`` routing weights of HF's own router (0 = not routed);
    ``edit(layer, weights, indices)`` may change the top-k weights the router returns."""
    got, handles = {}, []
    for i, layer in enumerate(decoder_layers(ref)):

        def hook(mod, args, out, i=i):
            parts = list(out)
            w_at = next(k for k, t in enumerate(parts) if t.is_floating_point() and t.shape[-1] < 16
                        and k > 0)  # fmt: skip
            x_at = next(k for k, t in enumerate(parts) if not t.is_floating_point())
            if edit is not None:
                parts[w_at] = edit(i, parts[w_at].clone(), parts[x_at])
            w, idx = parts[w_at], parts[x_at]
            E = parts[0].shape[-1]
            full = torch.zeros(w.shape[0], E, dtype=w.dtype).scatter(-1, idx.long(), w)
            got[i] = full.detach()
            return tuple(parts)

        handles.append(_router(layer).register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = ref(torch.tensor([ids])).logits[0]
    finally:
        for h in handles:
            h.remove()
    return torch.stack([got[i] for i in range(len(got))]), logits


def test_expert_site_records_hf_routing_and_categories(moe):
    name, model, ref = moe
    rec = tlm.RecordingConfig(hook=EXPERT_SITE)
    got = tlm.record(model, tlm.tokenize(model, PROMPTS), rec)
    E = got.shape[-1]
    assert E == 4
    for r, p in enumerate(PROMPTS):
        want, _ = _hf_routing(ref, _ids(model, p))
        torch.testing.assert_close(got[r].float(), want[:, -1].float(), atol=1e-5, rtol=1e-4)
    # categories from the same statistics: active = routed, by hand
    data = _data()
    res = tlm.analyze(model, data, tlm.AnalysisConfig(recording=rec), keep_items=True)
    for k, it in enumerate(data.items):
        routed = torch.stack(
            [_hf_routing(ref, _ids(model, it.prompts[x]))[0][:, -1] > 0 for x in data.languages]
        )  # [lang, layer, E]
        n = routed.sum(0)
        cats = res.categories
        assert torch.equal(cats.mask("all-shared")[k], n == 2)
        assert torch.equal(cats.mask("non-activated")[k], n == 0)
        assert torch.equal(cats.specific_mask("en")[k], routed[0] & (n == 1))


def test_expert_edits_equal_router_masking_by_hand(moe):
    name, model, ref = moe
    g = torch.Generator().manual_seed(0)
    L = model.cfg.n_layers
    experts = torch.rand(L, 4, generator=g) < 0.5
    experts[:, 0] = True
    off = tlm.NeuronSet(experts, "experts", EXPERT_SITE, tuple(range(L)))
    rows = tlm.answer_rows(model, PROMPTS, ANSWERS)
    sc = tlm.score_answers(
        model, rows, [None, lambda b: tlm.deactivate(off), lambda b: tlm.amplify(off, 2.0)]
    )
    for r, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        ids_p = _ids(model, p)
        full = _ids(model, p + a)
        first = len(ids_p) - 1

        for k, factor in ((1, 0.0), (2, 2.0)):

            def edit(layer, w, idx, factor=factor, first=first):
                hit = experts[layer][idx.long()]  # [tokens, k]
                hit[:first] = False  # scope "last": the last prompt token onwards
                return torch.where(hit, w * factor, w)

            _, logits = _hf_routing(ref, full[:-1], edit)
            lp = torch.log_softmax(logits.double(), -1)
            want = sum(float(lp[first + i, t]) for i, t in enumerate(full[len(ids_p) :]))
            assert abs(float(sc[k].logprob[r]) - want) < 1e-3, (name, k, r)
        _, logits = _hf_routing(ref, full[:-1])
        lp = torch.log_softmax(logits.double(), -1)
        want = sum(float(lp[first + i, t]) for i, t in enumerate(full[len(ids_p) :]))
        assert abs(float(sc[0].logprob[r]) - want) < 1e-3
    assert not torch.allclose(sc[0].logprob, sc[1].logprob)


def test_amplified_expert_generation_equals_a_hand_made_router_hook(moe):
    name, model, ref = moe
    L = model.cfg.n_layers
    experts = torch.zeros(L, 4, dtype=torch.bool)
    experts[:, 1] = True
    iv = tlm.amplify(tlm.NeuronSet(experts, "e1", EXPERT_SITE, tuple(range(L))), 3.0)
    got = _generate(model, iv)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    for prompt, gen in zip(PROMPTS[:2], got, strict=True):
        hooks = []
        for i, layer in enumerate(decoder_layers(ref)):

            def hook(mod, args, out, i=i):
                parts = list(out)
                w_at = next(k for k, t in enumerate(parts) if t.is_floating_point() and k > 0
                            and t.shape[-1] < 16)  # fmt: skip
                x_at = next(k for k, t in enumerate(parts) if not t.is_floating_point())
                w, idx = parts[w_at].clone(), parts[x_at]
                hit = experts[i][idx.long()]
                hit[:-1] = False  # the last position of every step (one row)
                parts[w_at] = torch.where(hit, w * 3.0, w)
                return tuple(parts)

            hooks.append((_router(layer), "post", hook))
        out = generate_with(ref, _ids(model, prompt), hooks, 4)
        assert gen == out, (name, gen, out)


# -- the shared expert's neurons (Qwen-MoE) --------------------------------------------------
def test_shared_expert_neurons_are_the_hf_down_projection_input(tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_family("qwen2_moe", tmp_path / "m")
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model = tlm.load_model(path)
    rec = tlm.RecordingConfig(hook=SHARED_EXPERT_SITE)
    got = tlm.record(model, tlm.tokenize(model, PROMPTS), rec)
    for r, p in enumerate(PROMPTS):
        seen = {}
        handles = [
            sub(layer, "mlp.shared_expert.down_proj").register_forward_pre_hook(
                lambda m, a, i=i, seen=seen: seen.__setitem__(i, a[0].detach())
            )
            for i, layer in enumerate(decoder_layers(ref))
        ]
        with torch.no_grad():
            ref(torch.tensor([_ids(model, p)]))
        for h in handles:
            h.remove()
        want = torch.stack([seen[i].reshape(-1, seen[i].shape[-1])[-1] for i in range(len(seen))])
        torch.testing.assert_close(got[r], want, atol=1e-5, rtol=1e-4)
    # and they can be analysed and edited like any neurons
    res = tlm.analyze(model, _data(2), tlm.AnalysisConfig(recording=rec))
    assert res.stats.n_items == 2
    L, D = got.shape[1:]
    mask = torch.rand(L, D, generator=torch.Generator().manual_seed(5)) < 0.4
    off = tlm.NeuronSet(mask, "shared", SHARED_EXPERT_SITE, tuple(range(L)))
    rows = tlm.answer_rows(model, PROMPTS, ANSWERS)
    sc = tlm.score_answers(model, rows, [lambda b: tlm.deactivate(off)])[0]
    for r, (p, a) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        ids_p, full = _ids(model, p), _ids(model, p + a)
        first = len(ids_p) - 1

        def pre(m, args, i, first=first):
            x = args[0].clone()  # [tokens, d] of one row
            x[first:, mask[i]] = 0
            return (x, *args[1:])

        handles = [
            sub(layer, "mlp.shared_expert.down_proj").register_forward_pre_hook(
                lambda m, a, i=i: pre(m, a, i)
            )
            for i, layer in enumerate(decoder_layers(ref))
        ]
        with torch.no_grad():
            logits = ref(torch.tensor([full[:-1]])).logits[0]
        for h in handles:
            h.remove()
        lp = torch.log_softmax(logits.double(), -1)
        want = sum(float(lp[first + i, t]) for i, t in enumerate(full[len(ids_p) :]))
        assert abs(float(sc.logprob[r]) - want) < 1e-3


def test_cli_analyses_experts_and_refuses_neurons_on_a_moe_model(tmp_path, capsys):
    from tl_multineuron.cli import main

    path = build_family("mixtral", tmp_path / "m")
    common = ["analyze", "--model", path, "--task", "facts", "--limit", "2"]
    assert main([*common, "--out", str(tmp_path / "neurons")]) == 2
    err = capsys.readouterr().err
    assert "mixture-of-experts" in err and EXPERT_SITE in err and "layers [0, 1]" in err
    assert not any((tmp_path / "neurons").rglob("*.pt"))  # nothing half-written
    assert main([*common, "--out", str(tmp_path / "experts"), "--hook", EXPERT_SITE]) == 0
    stats = tlm.SharingStats.load(tmp_path / "experts" / "stats.pt")
    assert stats.n_items == 2 and stats.n_layers == 2
