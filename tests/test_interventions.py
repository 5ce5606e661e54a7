import pytest
import torch
from helpers import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

import tl_multineuron as tlm
from tl_multineuron import MultiNeuronError
from tl_multineuron.experiments.interventions import (
    Intervention,
    amplify,
    apply,
    deactivate,
    mean_ablate,
    steer_toward,
)
from tl_multineuron.experiments.neuron_sets import NeuronSet
from tl_multineuron.sharing.recording import encode as encode_prompt


@pytest.fixture(scope="module", params=["gelu", "gated"])
def model(request):
    return tiny_model(request.param, seed=3)


def _toks(model, text="hello world"):
    return tlm.tokenize(model, [text]).tokens


def _n_hooks(model):
    return sum(len(hp._forward_hooks) for hp in model.hook_dict.values())


def test_zeroing_equals_removing_w_out_row(model):
    layer, neuron = 1, 5
    s = NeuronSet.from_indices({layer: [neuron]}, 2, 24)
    toks = _toks(model)
    with torch.inference_mode(), apply(model, deactivate(s, "all")):
        ablated = model(toks)
    other = tiny_model("gated" if model.cfg.gated_mlp else "gelu", seed=3)
    # the parameter holding W_out[layer] (a Linear weight: [d_model, d_mlp])
    w = next(
        p
        for n, p in other.named_parameters()
        if n.startswith(f"layers.{layer}.")
        and ".mlp." in n
        and "out" in n
        and n.endswith("weight")
        and p.shape == (16, 24)
    )
    with torch.no_grad():
        assert w.shape == (16, 24)
        w[:, neuron] = 0.0
        removed = other(toks)
    torch.testing.assert_close(ablated, removed, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        assert not torch.allclose(model(toks), ablated)


def test_scale_by_one_is_identity(model):
    s = NeuronSet(torch.ones(2, 24, dtype=torch.bool), "all")
    toks = _toks(model)
    with torch.inference_mode():
        base = model(toks)
        with apply(model, amplify(s, 1.0, "all")):
            same = model(toks)
    assert torch.equal(base, same)


def test_ops_by_hand(model):
    act = torch.arange(12, dtype=torch.float32).view(1, 3, 4)
    m = torch.tensor([True, False, True, False])
    from tl_multineuron.experiments.interventions import NeuronHook

    out = NeuronHook(0, m, "scale", 2.0, positions="last")(act, None)
    assert out[0, 2].tolist() == [16.0, 9.0, 20.0, 11.0] and torch.equal(out[0, :2], act[0, :2])
    out = NeuronHook(0, m, "add", 1.0, positions="all")(act, None)
    assert out[0, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    out = NeuronHook(0, m, "set", -1.0, positions=(0,))(act, None)
    assert out[0, 0].tolist() == [-1.0, 1.0, -1.0, 3.0] and torch.equal(out[0, 1:], act[0, 1:])
    mu = torch.full((4,), 10.0)
    out = NeuronHook(0, m, "toward", mu, strength=0.5, positions="last")(act, None)
    assert out[0, 2].tolist() == [9.0, 9.0, 10.0, 11.0]
    rows = torch.tensor([[True, False, False, False], [False, True, False, False]])
    act2 = torch.ones(2, 1, 4)
    out = NeuronHook(0, rows, "zero", positions="last")(act2, None)
    assert out[:, 0].tolist() == [[0, 1, 1, 1], [1, 0, 1, 1]]


def test_hooks_removed_on_normal_and_raising_path(model):
    s = NeuronSet.from_indices({0: [1, 2]}, 2, 24)
    before = _n_hooks(model)
    with apply(model, deactivate(s)):
        assert _n_hooks(model) > before
        model(_toks(model))
    assert _n_hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"), apply(model, deactivate(s)):
        model(_toks(model))
        raise RuntimeError("boom")
    assert _n_hooks(model) == before
    # hooks that never fire are reported
    with pytest.raises(MultiNeuronError, match="never fired"), apply(model, deactivate(s)):
        pass
    assert _n_hooks(model) == before


def test_usable_in_plain_tl_code(model):
    s = NeuronSet.from_indices({1: [0, 3]}, 2, 24)
    toks = _toks(model)
    hooks = amplify(s, 3.0, "all").fwd_hooks(model)
    a = model.run_with_hooks(toks, fwd_hooks=hooks)
    with model.hooks(fwd_hooks=hooks):
        b = model(toks)
    torch.testing.assert_close(a, b)


def _greedy_stepwise(model, prompt_ids, n, iv_for_positions):
    ids = list(prompt_ids)
    P = len(ids)
    for _ in range(n):
        toks = torch.tensor([ids])
        iv = iv_for_positions(tuple(range(P - 1, len(ids))))
        with torch.inference_mode(), model.hooks(fwd_hooks=iv.fwd_hooks(model)):
            ids.append(int(model(toks)[0, -1].argmax()))
    return ids[P:]


@pytest.mark.parametrize("scope", ["last", "all"])
def test_generate_with_intervention_equals_stepwise_forward(model, scope):
    s = NeuronSet.from_indices({0: list(range(0, 24, 2)), 1: [1, 4, 9]}, 2, 24)
    prompt = encode_prompt(model, "hello")

    # TL's generate on a native model recomputes the whole sequence each step (no KV cache),
    # so "last" is the current last token; with a KV cache (test_gemma) it is every new token.
    def iv_for(pos):
        return amplify(s, 4.0, scope)

    want = _greedy_stepwise(model, prompt, 5, iv_for)
    with torch.inference_mode(), apply(model, amplify(s, 4.0, scope)):
        got = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=5,
            do_sample=False,
            return_type="tokens",
            verbose=False,
            stop_at_eos=False,
        )
    assert got[0, len(prompt) :].tolist() == want


def test_per_row_masks_equal_separate_runs(model):
    toks = tlm.tokenize(model, ["abc", "xyz"]).tokens
    masks = torch.zeros(2, 2, 24, dtype=torch.bool)
    masks[0, 0, :5] = True
    masks[1, 1, 7:9] = True
    with torch.inference_mode():
        with apply(model, deactivate(masks, "all")):
            both = model(toks)
        for r in range(2):
            with apply(model, deactivate(NeuronSet(masks[r]), "all")):
                one = model(toks[r : r + 1])
            torch.testing.assert_close(both[r], one[0], rtol=1e-5, atol=1e-6)


def test_mean_ablate_and_steer(model):
    s = NeuronSet.from_indices({1: [2]}, 2, 24)
    means = torch.randn(2, 24)
    got = {}

    def grab(act, hook):
        got["a"] = act.clone()

    toks = _toks(model)
    with (
        torch.inference_mode(),
        apply(model, mean_ablate(s, means, "all")),
        model.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", grab)]),
    ):
        model(toks)
    assert torch.allclose(got["a"][0, :, 2], means[1, 2].expand(toks.shape[1]))
    with (
        torch.inference_mode(),
        apply(model, steer_toward(s, means, 1.0, "all")),
        model.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", grab)]),
    ):
        model(toks)
    assert torch.allclose(got["a"][0, :, 2], means[1, 2].expand(toks.shape[1]))


def test_bad_input(model):
    with pytest.raises(MultiNeuronError, match=r"indices \[30\] outside"):
        NeuronSet.from_indices({0: [1, 30]}, 2, 24)
    with pytest.raises(MultiNeuronError, match="layer 5 does not exist"):
        NeuronSet.from_indices({5: [1]}, 2, 24)
    s = NeuronSet.from_indices({0: [1]}, 2, 24)
    with pytest.raises(MultiNeuronError, match="not finite"):
        amplify(s, float("nan"))
    with pytest.raises(MultiNeuronError, match="empty neuron set"):
        deactivate(NeuronSet(torch.zeros(2, 24, dtype=torch.bool))).fwd_hooks(model)
    with pytest.raises(MultiNeuronError, match="the model has 2 x 24"):
        deactivate(NeuronSet.from_indices({0: [1]}, 2, 32)).fwd_hooks(model)
    with pytest.raises(MultiNeuronError, match="op"):
        Intervention(s, "explode")
    with pytest.raises(MultiNeuronError, match="needs value"):
        Intervention(s, "mean")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 100))
def test_random_controls_have_same_per_layer_sizes(seed, rseed):
    g = torch.Generator().manual_seed(seed)
    s = NeuronSet(torch.rand(4, 30, generator=g) < 0.3, "target")
    r = s.random_like(rseed)
    assert r.per_layer_sizes() == s.per_layer_sizes()
    if (s.mask.sum(-1) > 15).any():  # more than half a layer: no disjoint control exists
        with pytest.raises(MultiNeuronError, match="cannot draw"):
            s.random_like(rseed, exclude=s)
        return
    r2 = s.random_like(rseed, exclude=s)
    assert r2.per_layer_sizes() == s.per_layer_sizes()
    assert not (r2.mask & s.mask).any()


def test_set_algebra_and_file_roundtrip(tmp_path):
    a = NeuronSet.from_indices({0: [1, 2], 1: [3]}, 2, 8, "a")
    b = NeuronSet.from_indices({0: [2], 1: [4]}, 2, 8, "b")
    assert (a & b).indices() == {0: [2]}
    assert (a | b).indices() == {0: [1, 2], 1: [3, 4]}
    assert (a - b).indices() == {0: [1], 1: [3]}
    assert len(~a) == 16 - 3
    a.save(tmp_path / "a.json")
    back = NeuronSet.load(tmp_path / "a.json")
    assert torch.equal(back.mask, a.mask) and back.name == "a"
    with pytest.raises(MultiNeuronError, match="different shapes"):
        a & NeuronSet.from_indices({0: [1]}, 3, 8)


def test_sets_from_stats_and_categories():
    stats = tlm.SharingStats(("en", "de"), (0.0,), "gt", 1, 3)
    acts = torch.tensor([[[[1.0, 1.0, -1.0]], [[1.0, -1.0, -1.0]]]]).repeat(4, 1, 1, 1)
    stats.update(acts)
    assert NeuronSet.from_stats(stats, "all-shared", 1.0).indices() == {0: [0]}
    assert NeuronSet.specific(stats, "en", 0.5).indices() == {0: [1]}
    cats = tlm.categorize_acts(acts[0])
    assert NeuronSet.from_categories(cats, "all-shared").indices() == {0: [0]}


def test_interventions_compose_in_order(model):
    a = NeuronSet.from_indices({1: [3]}, 2, 24)
    toks = _toks(model)
    both = amplify(a, 2.0, "all") + amplify(a, 3.0, "all")
    with torch.inference_mode():
        with apply(model, both):
            x = model(toks)
        with apply(model, amplify(a, 6.0, "all")):
            y = model(toks)
        # zeroing after scaling is zeroing
        with apply(model, amplify(a, 5.0, "all") + deactivate(a, "all")):
            z = model(toks)
        with apply(model, deactivate(a, "all")):
            w = model(toks)
    torch.testing.assert_close(x, y)
    torch.testing.assert_close(z, w)


def _layer0_set(model):
    mask = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
    mask[0] = True
    return NeuronSet(mask, "layer 0")


@pytest.mark.parametrize("where", ["last", "all"])
def test_right_padded_record_edits_each_rows_own_positions(model, where):
    """record right-pads; 'last' / 'all' must mean each row's own last / real tokens."""
    short, long = "dog cat", "the sun and the moon over the sea"
    iv = Intervention(_layer0_set(model), "scale", 3.0, where)
    with apply(model, iv):
        both = tlm.record(model, tlm.tokenize(model, [short, long]))
    with apply(model, iv):
        alone = tlm.record(model, tlm.tokenize(model, [short]))
    plain = tlm.record(model, tlm.tokenize(model, [short]))
    torch.testing.assert_close(both[0], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(both[0, 1], plain[0, 1])  # the edit reached the short row


def test_truncated_record_does_not_make_later_hooks_silent(model):
    mask = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
    mask[-1, :3] = True
    late = deactivate(NeuronSet(mask, "last layer"))
    batch = tlm.tokenize(model, ["dog cat"])
    with apply(model, late):  # record stops after layer 0: the last layer never runs
        tlm.record(model, batch, tlm.RecordingConfig(layers=(0,)))
    with pytest.raises(MultiNeuronError, match="never fired"), apply(model, late):
        pass  # no pass at all: still an error


def test_declared_batch_of_another_size_is_an_error(model):
    from tl_multineuron.backends.batch_positions import running_batch

    batch = tlm.tokenize(model, ["dog cat", "sun"])
    with (
        pytest.raises(MultiNeuronError, match="running batch has 3 rows"),
        running_batch(torch.tensor([2, 2, 2]), batch.tokens.shape[1]),
        apply(model, deactivate(_layer0_set(model))),
    ):
        model(batch.tokens)


def test_set_rows_on_named_layers(model, tmp_path):
    """A set whose rows name their blocks (``layers``) edits exactly those blocks; it survives
    save/load and set algebra, and sets of different sites or layers do not combine."""
    m = torch.zeros(1, model.cfg.d_mlp, dtype=torch.bool)
    m[0, 3] = True
    s = NeuronSet(m, "one", layers=(1,))
    hooks = deactivate(s).fwd_hooks(model)
    assert [h for h, _ in hooks] == ["blocks.1.mlp.hook_post"]
    toks = _toks(model)
    _, clean = model.run_with_cache(toks, names_filter=lambda n: n.endswith("mlp.hook_post"))
    with apply(model, deactivate(s)):
        _, edited = model.run_with_cache(toks, names_filter=lambda n: n.endswith("mlp.hook_post"))
    assert torch.equal(edited["blocks.0.mlp.hook_post"], clean["blocks.0.mlp.hook_post"])
    assert (edited["blocks.1.mlp.hook_post"][0, -1, 3] == 0).all()
    s.save(tmp_path / "s.json")
    back = NeuronSet.load(tmp_path / "s.json")
    assert torch.equal(back.mask, m) and back.layers == (1,) and back.indices() == {1: [3]}
    assert (s | s).layers == (1,) and (~s).site == "mlp.hook_post"
    with pytest.raises(MultiNeuronError, match="different sites"):
        s | NeuronSet(m, "other", layers=(0,))
    with pytest.raises(MultiNeuronError, match="do not name its 1 mask rows"):
        NeuronSet(m, "bad", layers=(0, 1))
    with pytest.raises(MultiNeuronError, match="layers \\[7\\] do not exist"):
        deactivate(NeuronSet(m, "far", layers=(7,))).fwd_hooks(model)
    with pytest.raises(MultiNeuronError, match="need statistics recorded over all layers"):
        cfg = tlm.AnalysisConfig(recording=tlm.RecordingConfig(layers=(1,)))
        from helpers import toy_dataset

        NeuronSet.from_stats(tlm.analyze(model, toy_dataset(2), cfg).stats, "all-shared", 0.5)
