import dataclasses

import pytest
import torch
from helpers import tiny_hf_dir, tiny_model, toy_dataset

import tl_multineuron.experiments.evaluation as ev_mod
from tl_multineuron import MultiNeuronError, NeuronSet, deactivate, generate_greedy, load_model
from tl_multineuron.experiments.scoring import (
    AnswerRows,
    answer_rows,
    score_answers,
    supports_prefix_cache,
)
from tl_multineuron.sharing.recording import answer_ids, encode, get_tokenizer

PROMPTS = ["dog cat 1 ", "Hund 22 ab", "chien chat soleil 3", "x"]
ANSWERS = [" en1", "de2", " fr", "yz"]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    return load_model(tiny_hf_dir(tmp_path_factory.mktemp("hf") / "m"))


@pytest.fixture(scope="module")
def native():
    return tiny_model("gated", seed=4)


def _set(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return NeuronSet(torch.rand(model.cfg.n_layers, model.cfg.d_mlp, generator=g) < 0.3)


def test_scores_equal_a_hand_computation(native):
    rows = answer_rows(native, PROMPTS, ANSWERS)
    (sc,) = score_answers(native, rows, batch_size=3)
    for r, p in enumerate(PROMPTS):
        ids = encode(native, p)
        ans = list(rows.answers[r])
        with torch.inference_mode():
            lp = torch.log_softmax(native(torch.tensor([ids + ans[:-1]]))[0].double(), -1)
        pos = range(len(ids) - 1, len(ids) - 1 + len(ans))
        want = [lp[i, t] for i, t in zip(pos, ans, strict=True)]
        torch.testing.assert_close(sc.logprob[r], torch.stack(want).sum(), atol=1e-4, rtol=0)
        assert bool(sc.greedy_match[r]) == all(
            int(lp[i].argmax()) == t for i, t in zip(pos, ans, strict=True)
        )
        assert int(sc.first_rank[r]) == int((lp[pos[0]] > lp[pos[0], ans[0]]).sum())
        assert int(sc.n_tokens[r]) == len(ans)


@pytest.mark.parametrize("kind", ["hf", "native"])
def test_greedy_match_is_generation(kind, hf_model, native):
    model = hf_model if kind == "hf" else native
    rows = answer_rows(model, PROMPTS, ANSWERS)
    S = _set(model)
    none, deact = score_answers(model, rows, [None, lambda block: deactivate(S)])
    for sc, hooks in ((none, None), (deact, lambda s, e: deactivate(S).fwd_hooks(model))):
        gens = generate_greedy(model, PROMPTS, 6, 2, hooks_for_batch=hooks)
        starts = [list(g[: len(a)]) == list(a) for g, a in zip(gens, rows.answers, strict=True)]
        assert sc.greedy_match.tolist() == starts
    # the model's own greedy tokens as the gold answer: every such row must match
    gens = generate_greedy(model, PROMPTS, 3, 4)
    keep = [i for i, g in enumerate(gens) if g]
    assert keep
    own = AnswerRows(
        tuple(rows.prompts[i] for i in keep),
        tuple(tuple(gens[i]) for i in keep),
        tuple(rows.labels[i] for i in keep),
        rows.bos,
    )
    (sc,) = score_answers(model, own)
    assert sc.greedy_match.all()


def test_prefix_cache_and_shared_batches_change_nothing(hf_model):
    model = hf_model
    assert supports_prefix_cache(model)
    rows = answer_rows(model, PROMPTS * 3, ANSWERS * 3)
    edits = [None, lambda b: deactivate(_set(model, 1)), lambda b: deactivate(_set(model, 2))]
    cached = score_answers(model, rows, edits, cache="prefix", batch_size=4, max_rows=12)
    full = score_answers(model, rows, edits, cache="none", batch_size=5, max_rows=5)
    for a, b in zip(cached, full, strict=True):
        torch.testing.assert_close(a.logprob, b.logprob, atol=1e-4, rtol=0)
        assert torch.equal(a.greedy_match, b.greedy_match)
        assert torch.equal(a.first_rank, b.first_rank)
    assert not torch.equal(cached[0].logprob, cached[1].logprob)  # the edit did something


def test_edited_positions(native):
    """scope last: the last prompt token and the answer positions; all: every real position,
    BOS only when asked; and a bound hook edits exactly those positions of its rows."""
    from tl_multineuron.experiments.scoring import bind_rows, block_pass

    rows = answer_rows(native, ["abc", "x"], ["de", "yzw"])
    p = [len(x) for x in rows.prompts]
    a = [len(x) for x in rows.answers]
    last = block_pass(native, rows, [0, 1], "last", False, False).edit_pos
    every = block_pass(native, rows, [0, 1], "all", False, False).edit_pos
    with_bos = block_pass(native, rows, [0, 1], "all", True, False).edit_pos
    for i in range(2):
        assert last[i].nonzero().flatten().tolist() == list(range(p[i] - 1, p[i] + a[i] - 1))
        assert every[i].nonzero().flatten().tolist() == list(range(1, p[i] + a[i] - 1))
        assert with_bos[i].nonzero().flatten().tolist() == list(range(0, p[i] + a[i] - 1))
    D = native.cfg.d_mlp
    iv = deactivate(NeuronSet(torch.ones(2, D, dtype=torch.bool)))
    (name, hook), *_ = bind_rows(iv, native, (2, 4), last)  # rows 2..3 of a batch of 4
    act = torch.ones(4, last.shape[1], D)
    out = hook(act, None)
    assert (out[:2] == 1).all()  # other rows untouched
    assert torch.equal(out[2:].eq(0).all(-1), last) and hook.fired


def test_scoring_errors(native):
    with pytest.raises(MultiNeuronError, match="tokenizes to nothing"):
        answer_rows(native, ["abc"], [""], ["item 'q', language 'en'"])
    with pytest.raises(MultiNeuronError, match=r"item 'q'.*exceed the model's context"):
        answer_rows(native, ["a" * 60], ["b" * 10], ["item 'q', language 'en'"])
    rows = answer_rows(native, ["abc"], ["d"])
    with pytest.raises(MultiNeuronError, match="scope"):
        score_answers(native, rows, scope="first")
    with pytest.raises(MultiNeuronError, match="no reusable KV cache"):
        score_answers(native, rows, cache="prefix")
    with pytest.raises(MultiNeuronError, match="no edits"):
        score_answers(native, rows, [])


@pytest.mark.parametrize("kind", ["hf", "native"])
def test_memory_budget_splits_passes_without_changing_scores(kind, hf_model, native):
    from tl_multineuron.backends.memory import estimate_forward

    model = hf_model if kind == "hf" else native
    rows = answer_rows(model, PROMPTS, ANSWERS, [f"item {i}, language 'en'" for i in range(4)])
    S = _set(model)
    edits = [None, lambda block: deactivate(S)]
    free = score_answers(model, rows, edits, batch_size=4)
    # room for the logits of 8 positions and one row's pass at a time
    longest = max(len(p) + len(a) for p, a in zip(rows.prompts, rows.answers, strict=True))
    logits = 8 * 2 * model.cfg.d_vocab * 4
    tight = logits + estimate_forward(model, 1, longest, "eager").total
    split = score_answers(model, rows, edits, batch_size=4, max_memory=tight, chunk=8)
    assert estimate_forward(model, 2, longest, "eager").total > tight - logits  # it did split
    for a, b in zip(free, split, strict=True):
        assert torch.equal(a.greedy_match, b.greedy_match)
        torch.testing.assert_close(a.logprob, b.logprob, rtol=1e-5, atol=1e-5)
    with pytest.raises(MultiNeuronError, match=r"item \d, language 'en': the prompt is \d+ tokens"):
        score_answers(model, rows, edits[:1], max_memory=tight // 4, chunk=8)


def test_evaluate_prefix_match_is_token_level_and_text_match_lenient(native, monkeypatch):
    """``prefix_match`` demands the gold's own tokens (one-pass ``greedy_match``'s twin);
    ``text_match`` accepts the same text case-folded."""
    ds = toy_dataset(2, ("en", "de"))
    pairs = [(it, x) for it in ds.items for x in ds.languages]
    tok = get_tokenizer(native)

    def ids(text):
        return list(tok(text, add_special_tokens=False)["input_ids"])

    gold = [answer_ids(native, it.prompts[x], ds.target(it, x)) for it, x in pairs]
    fake = [
        gold[0] + ids(" more\n"),  # gold, then more text
        ids(ds.target(*pairs[1]).upper()),  # the same text in another case
        gold[2][:-1],  # cut short
        ids(" x"),  # wrong
    ]
    monkeypatch.setattr(ev_mod, "generate_greedy", lambda *a, **k: fake)
    res = ev_mod.evaluate(native, ds)
    assert res.prefix_match.tolist() == [True, False, False, False]
    assert res.text_match.tolist() == [True, True, False, False]
    assert res.first_token_match.tolist() == [True, True, True, True]  # all begin with " "
    assert res.generated.tolist()[0] == ds.target(*pairs[0]).strip() + " more"


def test_evaluate_takes_empty_generations_with_a_fast_tokenizer(hf_model, monkeypatch):
    """A row whose generation is empty (EOS first) is a miss, not a decode of token -1 (a
    fast tokenizer raises OverflowError on it)."""
    ds = toy_dataset(2, ("en", "de"))
    assert get_tokenizer(hf_model).is_fast
    monkeypatch.setattr(ev_mod, "generate_greedy", lambda *a, **k: [[], [], [], []])
    res = ev_mod.evaluate(hf_model, ds)
    assert not res.prefix_match.any() and not res.first_token_match.any()
    assert res.generated.tolist() == [""] * 4


@pytest.mark.parametrize("kind", ["hf", "native"])
def test_one_mask_per_layer_equals_per_row_masks_and_a_hand_made_hook(kind, hf_model, native):
    """A static set (one mask per layer) and the same set as per-row masks give identical
    scores in one shared pass; the fused per-site hook (multiplicative ops in one product,
    others in order on one copy) equals TL's own run_with_hooks with the plain hooks."""
    from tl_multineuron import Intervention, amplify

    model = hf_model if kind == "hf" else native
    rows = answer_rows(model, PROMPTS * 2, ANSWERS * 2)
    S1, S2 = _set(model, 1), _set(model, 2)

    def per_row(iv):
        return lambda b: Intervention(
            iv.neurons.mask.expand(len(b), *iv.neurons.mask.shape).clone(), iv.op, iv.value
        )

    zero, amp = deactivate(S1), amplify(S2, 2.0)
    means = torch.rand(model.cfg.n_layers, model.cfg.d_mlp)
    edits = [
        None,
        lambda b: zero,
        per_row(zero),
        lambda b: amp,
        per_row(amp),
        lambda b: zero + amp,  # a composite: two multiplicative parts on one site
    ]
    sc = score_answers(model, rows, edits, batch_size=8, max_rows=64)
    # a site with an op that is not multiplicative edits its blocks in order, on one copy
    sc += score_answers(
        model, rows, [lambda b: Intervention(S1, "mean", means) + amp, lambda b: amp], batch_size=8
    )
    assert torch.equal(sc[3].logprob, sc[7].logprob)
    for i, j in ((1, 2), (3, 4)):
        assert torch.equal(sc[i].logprob, sc[j].logprob) and torch.equal(
            sc[i].greedy_match, sc[j].greedy_match
        )
    assert not torch.equal(sc[0].logprob, sc[1].logprob)
    # each edit alone, as TL hooks on a plain full forward: the same log-probs
    for k, iv in ((1, zero), (3, amp), (5, zero + amp), (6, Intervention(S1, "mean", means) + amp)):
        for r in range(len(rows)):
            ids = list(rows.prompts[r]) + list(rows.answers[r][:-1])
            where = tuple(range(len(rows.prompts[r]) - 1, len(ids)))
            hooks = [(n, dataclasses.replace(h, positions=where)) for n, h in iv.fwd_hooks(model)]
            with torch.inference_mode():
                logits = model.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)
            lp = torch.log_softmax(logits[0].double(), -1)
            p0 = len(rows.prompts[r]) - 1
            want = sum(lp[p0 + i, t] for i, t in enumerate(rows.answers[r]))
            torch.testing.assert_close(sc[k].logprob[r], want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module", params=["gpt2", "gemma", "llama"])
def cached_model(request, tmp_path_factory):
    from helpers import tiny_gemma_dir, tiny_llama_dir

    make = {"gpt2": tiny_hf_dir, "gemma": tiny_gemma_dir, "llama": tiny_llama_dir}[request.param]
    return load_model(make(tmp_path_factory.mktemp(request.param) / "m"))


def test_folded_edits_share_one_prefix_cache_and_equal_tiled_passes(cached_model, monkeypatch):
    """Edits folded into the positions of one row (one prefix cache, no copies) score exactly as
    edits tiled over rows (a cache copy each): multiplicative and other ops, per-row masks,
    answers of several lengths; the cache is cropped back after every pass."""
    import tl_multineuron.experiments.scoring as scoring
    from tl_multineuron import Intervention, amplify
    from tl_multineuron.experiments.shared_prefix import folds

    model = cached_model
    assert folds(model)
    # one-token answers fold (a one-position suffix), longer ones stay tiled: both in one call
    rows = answer_rows(model, PROMPTS * 3, ["x", "y", "z", "w"] * 2 + ANSWERS)
    assert {len(a) for a in rows.answers} > {1}
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    g = torch.Generator().manual_seed(3)
    per_row = torch.rand(len(rows), L, D, generator=g) < 0.2
    edits = [
        None,
        lambda b: deactivate(_set(model, 1)),
        lambda b: amplify(_set(model, 2), 3.0),
        lambda b: Intervention(per_row[b], "zero"),
        lambda b: Intervention(per_row[b], "add", 0.5),
        lambda b: Intervention(_set(model, 4), "add", 0.7),
        lambda b: Intervention(_set(model, 5), "set", torch.linspace(-1, 1, D)),
    ]
    seen = []
    real = scoring.fold_mask

    def spy(*a, **k):
        seen.append(a[2])  # C
        return real(*a, **k)

    monkeypatch.setattr(scoring, "fold_mask", spy)
    folded = score_answers(model, rows, edits, cache="prefix", batch_size=5, max_rows=30)
    assert seen and max(seen) > 1  # edits were folded
    monkeypatch.setattr(scoring, "folds", lambda m: False)
    tiled = score_answers(model, rows, edits, cache="prefix", batch_size=5, max_rows=30)
    full = score_answers(model, rows, edits, cache="none", batch_size=5, max_rows=30)
    for a, b, c in zip(folded, tiled, full, strict=True):
        torch.testing.assert_close(a.logprob, b.logprob, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.logprob, c.logprob, atol=1e-4, rtol=0)
        assert torch.equal(a.greedy_match, b.greedy_match)
        assert torch.equal(a.first_rank, b.first_rank)
        assert torch.equal(a.first_token, b.first_token)
        torch.testing.assert_close(
            a.token_logprobs, b.token_logprobs, atol=1e-5, rtol=0, equal_nan=True
        )
    assert len({round(float(s.logprob.sum()), 3) for s in folded}) == len(edits)  # all differ


def test_fold_mask_is_block_diagonal_after_the_prefix():
    from tl_multineuron.experiments.shared_prefix import fold_mask

    am = torch.tensor([[0, 1, 1, 1, 0]])  # a left-padded 2-token prefix; suffix: 1 real, 1 pad
    m = fold_mask(am, 2, 2, torch.float32)[0, 0] == 0  # [C*S, P + C*S] allowed
    want = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0, 0],  # edit 0, position 0: the real prefix and itself
            [0, 1, 1, 1, 0, 0, 0],  # edit 0, position 1: its own real position 0, not the pad
            [0, 1, 1, 0, 0, 1, 0],  # edit 1, position 0: the prefix and its own position 0
            [0, 1, 1, 0, 0, 1, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, want)


DEMO = "dog: cat\nsun: moon\nred: blue\nup: down\n"


def test_shared_prefixes_score_as_full_passes(cached_model, monkeypatch):
    """Scope ``all``: rows that share a few-shot prefix compute it once per edit and score
    exactly as full passes, for multiplicative and other ops, BOS edited or not, with a row
    that shares nothing (plain path) and rows whose shared part crosses the tiny Gemma's
    16-token sliding window; per-row sets take the plain path for every row."""
    import tl_multineuron.experiments.prefix_groups as pg
    import tl_multineuron.experiments.scoring as scoring
    from tl_multineuron import Intervention, amplify

    model = cached_model
    prompts = [DEMO + w + ":" for w in ("hot", "big", "left", "in", "yes")]
    prompts += ["solo prompt", DEMO * 2 + "x:"]
    rows = answer_rows(model, prompts, [" cold", " small", " right", " out", " no", " a", " y"])
    groups, alone = pg.prefix_groups(rows)
    assert len(groups) == 1 and groups[0].shared > 16 and alone == [5]
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    per_row = torch.rand(len(rows), L, D, generator=torch.Generator().manual_seed(1)) < 0.2
    edits = [
        None,
        lambda b: deactivate(_set(model, 1)),
        lambda b: amplify(_set(model, 2), 3.0),
        lambda b: Intervention(_set(model, 4), "add", 0.7),
        lambda b: Intervention(_set(model, 5), "set", torch.linspace(-1, 1, D)),
    ]
    calls = []
    real = scoring.score_group
    monkeypatch.setattr(scoring, "score_group", lambda *a, **k: calls.append(1) or real(*a, **k))
    for bos in (False, True):
        kw = {"scope": "all", "include_bos": bos}
        shared = score_answers(model, rows, edits, batch_size=4, max_rows=8, **kw)
        assert calls
        calls.clear()
        full = score_answers(model, rows, edits, cache="none", **kw)
        assert not calls
        for a, b in zip(shared, full, strict=True):
            torch.testing.assert_close(a.logprob, b.logprob, atol=1e-5, rtol=0)
            torch.testing.assert_close(
                a.token_logprobs, b.token_logprobs, atol=1e-5, rtol=0, equal_nan=True
            )
            assert torch.equal(a.greedy_match, b.greedy_match)
            assert torch.equal(a.first_rank, b.first_rank)
            assert torch.equal(a.first_token, b.first_token)
        assert len({round(float(s.logprob.sum()), 3) for s in shared}) == len(edits)
    rowwise = [lambda b: Intervention(per_row[b], "zero")]
    got = score_answers(model, rows, rowwise, scope="all")
    assert not calls  # per-row sets differ between rows: no shared part
    want = score_answers(model, rows, rowwise, scope="all", cache="none")
    torch.testing.assert_close(got[0].logprob, want[0].logprob, atol=1e-5, rtol=0)


def test_prefix_groups_rule():
    from tl_multineuron.experiments.prefix_groups import prefix_groups

    def rows(seqs, firsts):
        p = tuple(tuple(s[: f + 1]) for s, f in zip(seqs, firsts, strict=True))
        a = tuple(tuple(s[f + 1 :]) for s, f in zip(seqs, firsts, strict=True))
        return AnswerRows(p, a, tuple(f"r{i}" for i in range(len(seqs))), 1)

    base = list(range(1, 13))
    # nothing shared, a single row, a shared part below the minimum: the plain path
    assert prefix_groups(rows([[1, 2, 3], [4, 5, 6]], [0, 0])) == ([], [0, 1])
    assert prefix_groups(rows([base + [50]], [0])) == ([], [0])
    assert prefix_groups(rows([base[:5] + [50, 51], base[:5] + [60, 61]], [0, 0]))[0] == []
    # a shared part is the common prefix minus its last token
    (g,), alone = prefix_groups(rows([base + [50, 51], base + [60, 61], [9, 9, 9]], [0, 0, 0]))
    assert g.rows == (0, 1) and g.shared == 11 and alone == [2]
    # scored from different positions: the shared part stops before the earliest
    (g,), _ = prefix_groups(rows([base + [50, 51], base + [60, 61]], [9, 11]))
    assert g.shared == 9
    # a longer common prefix is kept rather than extended to a row that would shorten it
    long = base * 2
    groups, alone = prefix_groups(
        rows([long + [7], long + [8], long + [9], base + [99, 98]], [0, 0, 0, 0])
    )
    assert [(g.rows, g.shared) for g in groups] == [((0, 1, 2), 23)] and alone == [3]


@pytest.mark.parametrize("scope", ["last", "all"])
def test_scoring_runs_sdpa_where_it_can_and_equals_eager(hf_model, scope):
    from tl_multineuron import efficient_attention
    from tl_multineuron.backends.tl_compat import bridge_attention_modules, hf_config

    model = hf_model
    # 1-token answers too: the folded path's 4D mask goes through SDPA
    prompts, answers = PROMPTS * 2 + ["dog cat", "Hund"], ANSWERS * 2 + [" a", " b"]
    rows = answer_rows(model, prompts, answers)
    seen = []
    before = hf_config(model)._attn_implementation

    S = _set(model, 3)

    def edit(block):
        seen.append(hf_config(model)._attn_implementation)
        return deactivate(S)

    out = {
        impl: score_answers(model, rows, [None, edit], scope=scope, attention=impl)
        for impl in ("sdpa", "eager")
    }
    half = len(seen) // 2
    assert seen and set(seen[:half]) == {"sdpa"} and set(seen[half:]) == {"eager"}
    assert hf_config(model)._attn_implementation == before  # restored after each call
    assert not any("forward" in vars(b) for b in bridge_attention_modules(model))
    with efficient_attention(model) as impl:
        assert impl == "sdpa"
        nested, _ = score_answers(model, rows, [None, edit], scope=scope)  # the outer block
        assert "forward" in vars(bridge_attention_modules(model)[0])  # still patched
    with efficient_attention(model, "eager") as impl:
        assert impl == "eager"
        with pytest.raises(MultiNeuronError, match="eager"), efficient_attention(model, "sdpa"):
            pass
    assert hf_config(model)._attn_implementation == before
    assert not any("forward" in vars(b) for b in bridge_attention_modules(model))
    torch.testing.assert_close(nested.logprob, out["sdpa"][0].logprob, atol=0, rtol=0)
    for a, b in zip(out["sdpa"], out["eager"], strict=True):
        torch.testing.assert_close(a.logprob, b.logprob, atol=1e-4, rtol=0)
        assert torch.equal(a.greedy_match, b.greedy_match)
        assert torch.equal(a.first_rank, b.first_rank)
    assert not torch.equal(out["sdpa"][0].logprob, out["sdpa"][1].logprob)
