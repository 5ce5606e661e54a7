"""The gate site, enrichment with bootstrap intervals, and Dai et al.'s knowledge neurons."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_hf_dir, tiny_model, toy_dataset

from tl_multineuron import MultiNeuronError
from tl_multineuron.attribution.analysis import AttributionConfig, attribute
from tl_multineuron.attribution.knowledge import coarse_neurons, knowledge_neurons, refine
from tl_multineuron.attribution.scores import integrated_gradients
from tl_multineuron.attribution.stats import ScoreStats
from tl_multineuron.sharing.accumulator import poisson_weights
from tl_multineuron.sharing.recording import RecordingConfig, encode, record, tokenize


# -- the gate site ----------------------------------------------------------------------------
def test_gate_site_is_act_of_the_gate_pre_activation():
    model = tiny_model("gated")
    batch = tokenize(model, ["dog cat", "Hund"])
    gate = record(model, batch, RecordingConfig(hook="gate"))
    pre = record(model, batch, RecordingConfig(hook="mlp.hook_pre"))
    act = model.blocks[0].mlp._original_component.act
    torch.testing.assert_close(gate, act(pre))
    assert RecordingConfig(hook="gate").site == "act(blocks.{layer}.mlp.hook_pre)"
    post = record(model, batch, RecordingConfig())
    assert not torch.allclose(gate, post)


def test_gate_site_refused_on_a_non_gated_mlp(tmp_path):
    model = tiny_model("gelu")
    with pytest.raises(MultiNeuronError, match="not gated"):
        record(model, tokenize(model, ["x"]), RecordingConfig(hook="gate"))
    with pytest.raises(MultiNeuronError, match="not gated"):
        attribute(model, toy_dataset(2), AttributionConfig(hook="gate"))


def test_compare_rules_on_a_gated_model():
    model = tiny_model("gated")
    ds = toy_dataset(4)
    res = attribute(model, ds, AttributionConfig(compare_rules=True, k=3, n_boot=20))
    st = res.stats
    assert set(st.rules) == {"post>t", "|post|>t", "gate>t"}
    # the post>t rule is the run's own categorisation
    # (rules keep no per-row summaries)
    own = ScoreStats(**{**st.methods["contribution"].__dict__, "rows": None})
    assert st.rules["post>t"].equals(own)
    # |a| > 0 calls (almost) nothing non-activated; all rules rank the same top contributors
    for r in st.rules.values():
        assert int(r.topk_counts.sum()) == int(st.methods["contribution"].topk_counts.sum())
    assert int(st.rules["|post|>t"].count[..., 0].sum()) <= int(
        st.rules["post>t"].count[..., 0].sum()
    )
    gate_cfg = attribute(model, ds, AttributionConfig(hook="gate", k=3, n_boot=0)).stats
    assert torch.equal(gate_cfg.methods["contribution"].count, st.rules["gate>t"].count)
    assert gate_cfg.meta["site"] == "act(blocks.{layer}.mlp.hook_pre)"


# -- enrichment -------------------------------------------------------------------------------
def _hand_stats(n_boot=0):
    # 2 items, 1 language, 1 layer, 4 neurons; K = 1.
    # item a: codes [3, 3, 0, 1], top neuron 0 (all-shared)
    # item b: codes [3, 0, 0, 2], top neuron 3 (partial-shared)
    s = ScoreStats("contribution", ("en",), (0,), 1, n_boot=n_boot)
    scores = torch.tensor([[[[9.0, 1, 1, 1]]], [[[1.0, 1, 1, 9]]]])
    codes = torch.tensor([[[3, 3, 0, 1]], [[3, 0, 0, 2]]])
    s.update(scores, codes, ["a", "b"] if n_boot else None)
    return s, scores, codes


def test_enrichment_by_hand():
    s, _, _ = _hand_stats()
    # base rates over the 8 (item, neuron) cells: non 3/8, specific 1/8, partial 1/8, all 3/8
    # top-K shares over 2 picks: partial 1/2, all 1/2
    est, lo, hi = s.enrichment_interval(over=(0, 1))
    torch.testing.assert_close(est, torch.tensor([0.0, 0.0, 4.0, 4 / 3], dtype=torch.float64))
    assert torch.isnan(lo).all() and torch.isnan(hi).all()  # no replicates asked for
    f = s.enrichment_frame(over=(0, 1))
    row = f[f.category == "all-shared"].iloc[0]
    assert (row.topk_share, row.base_rate) == (0.5, 0.375)


def test_bootstrap_replicates_are_exact_weighted_sums():
    s, scores, codes = _hand_stats(n_boot=50)
    w = poisson_weights(["a", "b"], 50)
    # replicate b's weighted all-shared top-K count: w_a * 1 + w_b * 0
    torch.testing.assert_close(s.boot_topk[:, 0, 0, 3], w[0])
    torch.testing.assert_close(s.boot_count[:, 0, 0, 3], 2 * w[0] + w[1])
    est, lo, hi = s.enrichment_interval(over=(0, 1))
    assert (lo[3] <= est[3] <= hi[3]) or torch.isnan(lo[3])


def test_bootstrap_does_not_depend_on_batching_or_order():
    scores = torch.randn(6, 2, 3, 10)
    codes = torch.randint(0, 4, (6, 3, 10))
    ids = [f"i{k}" for k in range(6)]
    one = ScoreStats("m", ("a", "b"), (0, 1, 2), 2, n_boot=30)
    one.update(scores, codes, ids)
    parts = [ScoreStats("m", ("a", "b"), (0, 1, 2), 2, n_boot=30) for _ in range(2)]
    parts[0].update(scores[3:], codes[3:], ids[3:])
    parts[1].update(scores[:3], codes[:3], ids[:3])
    merged = parts[0].merge(parts[1])
    torch.testing.assert_close(merged.boot_topk, one.boot_topk, rtol=0, atol=0)
    torch.testing.assert_close(merged.boot_count, one.boot_count, rtol=0, atol=0)
    with pytest.raises(MultiNeuronError, match="ids"):
        one.update(scores, codes)


def test_attribution_enrichment_round_trips(tmp_path):
    model = tiny_model("gated")
    st = attribute(model, toy_dataset(5), AttributionConfig(k=3, n_boot=40)).stats
    st.save(tmp_path / "a.pt")
    from tl_multineuron.attribution.stats import AttributionStats

    back = AttributionStats.load(tmp_path / "a.pt")
    assert back.equals(st)
    f = back.methods["contribution"].enrichment_frame(over=(0,))
    ok = f.dropna(subset=["low"])
    assert (
        len(ok) and ((ok.low <= ok.enrichment + 1e-12) & (ok.enrichment <= ok.high + 1e-12)).all()
    )
    assert st.meta["norms"]["final_norm"] == "rms" and st.meta["score_version"] == 2


# -- integrated gradients, Dai et al. ---------------------------------------------------------
def _plain_dai_ig(model, prompt, token, layer, steps=20):
    """Dai et al.'s recipe written out: one forward + backward per step, left Riemann sum of
    the answer probability's gradient, times the activation (baseline zero)."""
    ids = encode(model, prompt)
    toks = torch.tensor([ids])
    last = len(ids) - 1
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=f"blocks.{layer}.mlp.hook_post")
    a = cache[f"blocks.{layer}.mlp.hook_post"][0, last]
    total = torch.zeros_like(a, dtype=torch.float64)
    for k in range(steps):
        x = (k / steps * a).detach().requires_grad_(True)

        def patch(act, hook, x=x):
            act = act.clone()
            act[:, last] = x
            return act

        with torch.enable_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", patch)]):
            p = torch.softmax(model(toks)[0, last], -1)[token]
            (g,) = torch.autograd.grad(p, x)
        total += g.double()
    return (a.double() * total / steps).float()


def test_dai_preset_equals_a_plain_reimplementation():
    model = tiny_model("gelu", seed=1)
    prompts = ["dog cat", "Hund Katze", "chien chat"]
    tokens = [40, 41, 42]
    kn = knowledge_neurons(model, prompts, tokens, [0, 1])
    plain = torch.stack(
        [
            torch.stack([_plain_dai_ig(model, p, t, x) for x in (0, 1)])
            for p, t in zip(prompts, tokens, strict=True)
        ]
    )
    torch.testing.assert_close(kn.scores, plain, rtol=1e-4, atol=1e-7)
    peak = plain.flatten(1).amax(1)
    expect_coarse = plain > 0.2 * peak[:, None, None]
    assert torch.equal(kn.coarse, expect_coarse)
    assert torch.equal(kn.refined, expect_coarse.sum(0) > 0.7 * 3)
    assert all(
        kn.refined[model_l, n]
        for model_l, n in [(kn.layers.index(x), n) for x, n in kn.refined_list()]
    )


def test_coarse_and_refine_by_hand():
    ig = torch.tensor([[[1.0, 0.3, 0.1], [0.05, -2.0, 0.25]]])  # 1 prompt, 2 layers, 3 neurons
    assert coarse_neurons(ig).tolist() == [[[True, True, False], [False, False, True]]]
    assert not coarse_neurons(-ig.abs()).any()  # no positive attribution: no neuron
    c = torch.tensor([[[1, 0]], [[1, 1]], [[1, 0]]], dtype=torch.bool)
    assert refine(c, 0.5).tolist() == [[True, False]]
    with pytest.raises(MultiNeuronError):
        refine(c, 1.0)


def test_probability_target_and_bad_input():
    model = tiny_model("gelu")
    r = integrated_gradients(model, "dog", 40, 1, steps=64, target="prob")
    assert r.relative_gap < 1e-2
    assert 0 <= r.f_input <= 1
    with pytest.raises(MultiNeuronError, match="outside the vocabulary"):
        integrated_gradients(model, "dog", 10**6, 1, target="prob")
    with pytest.raises(MultiNeuronError, match="do not exist"):
        attribute(model, toy_dataset(2), AttributionConfig(methods=("ig",), ig_layers=(0, 9)))
    with pytest.raises(MultiNeuronError, match="dai"):
        AttributionConfig(methods=("ig",), ig_preset="dai")  # the preset's settings not given
    with pytest.raises(MultiNeuronError, match="ig_layers"):
        AttributionConfig(ig_layers="some")


def test_dai_preset_in_attribute_counts_knowledge_neurons():
    model = tiny_model("gated")
    ds = toy_dataset(3)
    st = attribute(model, ds, AttributionConfig.dai(ig_layers="all", ig_steps=20, n_boot=0)).stats
    kn = st.knowledge
    assert kn is not None and kn.n_items == 3 and kn.layers == (0, 1)
    assert int(kn.neuron_counts.sum()) == 3 * 2 * model.cfg.d_mlp
    assert st.meta["config"]["ig_preset"] == "dai"
    f = kn.to_frame()
    assert set(f.columns) >= {"refined_neurons", "base_rate", "enrichment"}


def test_cli_flags(tmp_path, capsys):
    from tl_multineuron.cli import main

    hf = tiny_hf_dir(tmp_path / "m")
    base = ["attribute", "--model", hf, "--task", "facts", "--limit", "2", "--out"]
    assert main([*base, str(tmp_path / "o1"), "--hook", "gate"]) == 2
    assert "not gated" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "o2"), "--ig-preset", "dai", "--ig-target", "logit"]) == 2
    assert "dai" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "o3"), "--ig-layers", "0,7", "--method", "ig"]) == 2
    assert "do not exist" in capsys.readouterr().err


def test_poisson_interval_agrees_with_a_multinomial_bootstrap():
    """The streaming Poisson bootstrap gives the interval an ordinary resampling of items
    gives (item-level heterogeneity built in)."""
    g = torch.Generator().manual_seed(0)
    n_items, k = 150, 4
    codes = torch.randint(0, 4, (n_items, 3, 40), generator=g)
    bias = torch.rand(n_items, generator=g) * 3
    scores = torch.randn(n_items, 2, 3, 40, generator=g)
    scores = scores + bias[:, None, None, None] * (codes[:, None] == 3)
    s = ScoreStats("m", ("a", "b"), (0, 1, 2), k, n_boot=600)
    s.update(scores, codes, [f"i{i}" for i in range(n_items)])
    est, lo, hi = s.enrichment_interval(over=(0, 1))
    top = torch.zeros(n_items, 4, dtype=torch.float64)
    cnt = torch.zeros(n_items, 4, dtype=torch.float64)
    for i in range(n_items):
        t = ScoreStats("m", ("a", "b"), (0, 1, 2), k)
        t.update(scores[i : i + 1], codes[i : i + 1])
        top[i], cnt[i] = t.topk_counts.sum((0, 1)), t.count.sum((0, 1))
    idx = torch.randint(0, n_items, (2000, n_items), generator=g)
    tb, cb = top[idx].sum(1), cnt[idx].sum(1)
    reps = (tb[:, 3] / tb.sum(-1)) / (cb[:, 3] / cb.sum(-1))
    m_lo, m_hi = torch.quantile(reps, 0.025), torch.quantile(reps, 0.975)
    width = float(m_hi - m_lo)
    assert abs(float(lo[3] - m_lo)) < 0.15 * width and abs(float(hi[3] - m_hi)) < 0.15 * width
    assert lo[3] < est[3] < hi[3]
