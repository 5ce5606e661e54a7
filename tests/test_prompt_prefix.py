"""Recording passes compute a language's shared prompt prefix once (sharing.prompt_prefix)."""

import pytest
import torch
from helpers import tiny_gemma_dir, tiny_hf_dir, tiny_llama_dir, tiny_model, toy_dataset

import tl_multineuron.sharing.recording as recording
from tl_multineuron import (
    MultiNeuronError,
    NeuronSet,
    ParallelDataset,
    ParallelItem,
    RecordingConfig,
    apply,
    deactivate,
    iter_dataset_with,
    load_model,
)
from tl_multineuron.backends.tl_compat import sliding_window
from tl_multineuron.sharing.prompt_prefix import PromptPrefixes, common_length, prefix_status
from tl_multineuron.sharing.recording import encode_prompts, language_prefixes, tokenize

DEMO = {
    "en": "dog: cat\nsun: moon\nred: blue\nup: down\n",
    "de": "Hund: Katze\nSonne: Mond\nrot: blau\n",
    "fr": "chien: chat\nsoleil: lune\n",
}
WORDS = ["hot", "big", "left", "in", "yes", "a", "long word here"]


def few_shot(n: int = 7, demo=DEMO, words=WORDS) -> ParallelDataset:
    items = [
        ParallelItem(f"it{i}", {x: demo[x] + words[i % len(words)] + ":" for x in demo}, {}, "t")
        for i in range(n)
    ]
    return ParallelDataset(tuple(items), tuple(demo), "few")


#: short prefixes (BOS + 6-8 bytes) and words: prefix + remainder inside the tiny Gemma's window
SHORT = few_shot(7, {"en": "ab: cd\n", "de": "abc: de\n", "fr": "x: yz\n"}, list("abcdefg"))


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma"])
def cached_model(request, tmp_path_factory):
    make = {"gpt2": tiny_hf_dir, "gemma": tiny_gemma_dir, "llama": tiny_llama_dir}[request.param]
    return load_model(make(tmp_path_factory.mktemp(request.param) / "m"))


def _record(model, ds, share, hook="mlp.hook_post", extra=(), batch_size=3):
    cfg = RecordingConfig(hook=hook)
    got = list(
        iter_dataset_with(model, ds, cfg, batch_size, extra_hooks=extra, share_prefixes=share)
    )
    acts = torch.cat([a for _, a, _ in got])
    extras = {h: torch.cat([e[h] for _, _, e in got]) for h in extra}
    return acts, extras


def _spy(monkeypatch, calls):
    real = PromptPrefixes.compute.__func__
    spy = classmethod(lambda c, *a, **k: calls.append(1) or real(c, *a, **k))
    monkeypatch.setattr(PromptPrefixes, "compute", spy)


def test_shared_prefix_records_as_full_passes(cached_model, monkeypatch):
    """Every language's demonstrations run once per call, in one pass (3 batches: 1 prefix
    pass), rows of different lengths continue them exactly; on the tiny Gemma the prefix plus
    remainder crosses its 16-token sliding window. Categories at thresholds 0 and 0.1 agree on
    every neuron not within float rounding of the threshold."""
    model = cached_model
    assert all(n > 16 for n in language_prefixes(model, few_shot()).values())
    # fr's 7 shared tokens are under the 8 the rule asks: its rows take the plain path, in the
    # same batches as the others' shared one
    assert language_prefixes(model, SHORT) == {"en": 8, "de": 9}
    calls, continued = [], []
    _spy(monkeypatch, calls)
    real = recording.record_with
    monkeypatch.setattr(
        recording,
        "record_with",
        lambda *a, **k: continued.append(k.get("prefix") is not None) or real(*a, **k),
    )
    extra = [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    windowed = sliding_window(model) is not None
    for ds, hook in ((few_shot(), "mlp.hook_post"), (SHORT, "mlp.hook_pre")):
        continued.clear()
        got, got_x = _record(model, ds, True, hook, extra)
        assert len(calls) == 1
        # the long demonstrations plus a remainder cross the tiny Gemma's window: plain path
        assert any(continued) == (ds is SHORT or not windowed)
        calls.clear()
        want, want_x = _record(model, ds, False, hook, extra)
        assert not calls
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_x[extra[0]], want_x[extra[0]], atol=1e-5, rtol=1e-5)
        for t in (0.0, 0.1):
            differ = (got > t) != (want > t)
            assert bool(((want[differ] - t).abs() < 1e-5).all())


def test_hooks_token_all_and_unshared_prompts_take_the_plain_path(cached_model, monkeypatch):
    model = cached_model
    ds = few_shot(5)
    calls = []
    _spy(monkeypatch, calls)
    S = NeuronSet(torch.rand(model.cfg.n_layers, model.cfg.d_mlp) < 0.3)
    with apply(model, deactivate(S, positions="last")):
        assert not prefix_status(model)[0]
        edited, _ = _record(model, ds, True)
    assert not calls  # an attached edit would have to act on the prefix too
    with apply(model, deactivate(S, positions="last")):
        want, _ = _record(model, ds, False)
    assert torch.equal(edited, want)
    cfg = RecordingConfig(token="all")
    assert language_prefixes(model, ds, cfg) == {}
    list(iter_dataset_with(model, ds, cfg, 2))
    assert not calls
    # zero-shot prompts share under 8 tokens; the toy set's shared words do
    zero = [ParallelItem(f"z{i}", {"en": f"{i} dog cat sun", "de": f"{i}"}, {}, "t") for i in "ab"]
    assert language_prefixes(model, ParallelDataset(tuple(zero), ("en", "de"), "z")) == {}
    assert set(language_prefixes(model, toy_dataset(4))) == {"en", "de", "fr"}
    assert language_prefixes(model, few_shot(1)) == {}
    native = tiny_model("gated", seed=1)
    assert not prefix_status(native)[0]
    assert language_prefixes(native, ds) == {}


def test_record_with_a_prefix_needs_the_last_token(cached_model):
    model = cached_model
    prefix = (PromptPrefixes.compute(model, [[1, 5, 6, 7]]), torch.tensor([0]))
    with pytest.raises(MultiNeuronError, match="token mode 'last'"):
        recording.record_with(
            model, tokenize(model, ["ab"], prepend_bos=False), RecordingConfig(token="all"),
            prefix=prefix,
        )  # fmt: skip


def test_common_length():
    assert common_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_length([[1, 2, 3]]) == 3
    assert common_length([[5], [1, 2]]) == 0
    assert common_length([]) == 0
    assert common_length([[], [1]]) == 0


def test_scorer_prompt_pass_shares_prefixes_and_equals_full_passes(cached_model, monkeypatch):
    """Scope ``last``: rows whose prompts share a few-shot prefix run it once (all groups'
    prefixes in one pass) and then their remainders, in the plain blocks (a row in no group,
    "solo", continues none beside rows that do); scores equal full passes for 1- and 2-token
    answers (folded and tiled suffixes) under several edits, per-row sets included. The long
    prefix plus a remainder would cross the tiny Gemma's 16-token sliding window with gaps in
    the cache, so there every block of that call takes whole prompts."""
    import tl_multineuron.experiments.answer_blocks as blocks
    from tl_multineuron import Intervention, amplify
    from tl_multineuron.experiments.scoring import answer_rows, score_answers

    model = cached_model
    short = ["ab: cd\nef: " + w for w in ("g", "hi", "j", "kl")] + [
        "gh: ij\nkl: m",
        "gh: ij\nkl: no",
    ]
    long = [DEMO["en"] + w + ":" for w in ("hot", "big", "left")] + ["solo"]
    answers = ["x", " y", "z", " w", "p", " q", "s", "t", "u", " a"]
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    g = torch.Generator().manual_seed(2)
    sets = [NeuronSet(torch.rand(L, D, generator=g) < 0.3) for _ in range(2)]
    used = []
    real = blocks.continue_prompts
    monkeypatch.setattr(
        blocks, "continue_prompts", lambda *a, **k: used.append(r := real(*a, **k)) or r
    )
    for prompts in (short, short + long):
        rows = answer_rows(model, prompts, answers[: len(prompts)])
        per_row = torch.rand(len(rows), L, D, generator=g) < 0.2
        edits = [
            None,
            lambda b: deactivate(sets[0]),
            lambda b: amplify(sets[1], 3.0),
            lambda b, per_row=per_row: Intervention(per_row[b], "zero"),
        ]
        used.clear()
        got = score_answers(model, rows, edits, batch_size=3)
        taken = {u is not None for u in used}
        windowed = sliding_window(model) is not None
        # the tiny Gemma refuses the call with the long group, not the short one
        assert taken == ({False} if windowed and prompts != short else {True})
        want = score_answers(model, rows, edits, cache="none")
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a.logprob, b.logprob, atol=1e-4, rtol=0)
            assert torch.equal(a.greedy_match, b.greedy_match)
            assert torch.equal(a.first_rank, b.first_rank)


def test_continued_cache_is_compacted_to_the_plain_layout(cached_model):
    """Rows continuing two prefixes of different lengths and a row continuing none: after the
    remainders run, the cache and mask are the left-padded prompt pass's (same width, keys and
    values equal at every real position, to float rounding)."""
    from tl_multineuron.backends.batch_positions import pad_tokens
    from tl_multineuron.experiments.prefix_groups import continue_prompts

    model = cached_model
    tok = encode_prompts(model, ["ab: cd\nef", "x: yz\na", "solo"])  # inside Gemma's window
    prompts = [tok[0], tok[0][:-1] + tok[1][-1:], tok[1], tok[2]]
    prefixes = PromptPrefixes.compute(model, [tok[0][:6], tok[1][:4]], "eager")
    index = torch.tensor([0, 0, 1, -1])
    cache, mask = continue_prompts(model, prefixes, index, prompts, 1, 0)
    toks, real = pad_tokens([p[:-1] for p in prompts], 0, left=True)
    with torch.inference_mode():
        _, plain = model(
            toks,
            attention_mask=real.long(),
            position_ids=(real.long().cumsum(-1) - 1).clamp_min(0),
            return_type="logits_and_cache",
            use_cache=True,
        )
    assert torch.equal(mask, real)
    for a, b in zip(cache.layers, plain.layers, strict=True):
        assert a.keys.shape == b.keys.shape and a.get_seq_length() == b.get_seq_length()
        m = real[:, None, :, None].expand_as(a.keys)
        torch.testing.assert_close(a.keys[m], b.keys[m], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.values[m], b.values[m], atol=1e-5, rtol=1e-5)


def test_generation_shares_prefixes_and_equals_whole_prompts(cached_model, monkeypatch):
    """Greedy generation (``generate_greedy``): the few-shot prefixes run once per call and
    the tokens equal whole-prompt generation, in batches that mix languages; the long
    demonstrations cross the tiny Gemma's 16-token window with gaps, so there those batches
    run whole prompts. With hooks attached, hooks per batch or the ``hf`` backend, no prefix
    is shared."""
    import tl_multineuron.experiments.evaluation as evaluation
    from tl_multineuron import generate_greedy

    model = cached_model
    used: list = []
    real = evaluation.greedy_from_prefixes
    monkeypatch.setattr(
        evaluation, "greedy_from_prefixes", lambda *a, **k: used.append(r := real(*a, **k)) or r
    )
    windowed = sliding_window(model) is not None
    # every language's demonstration 8 bytes: each prefix 8 tokens, inside Gemma's window
    short = few_shot(7, {"en": "ab: cde\n", "de": "abc: de\n", "fr": "xy: zwv\n"}, list("abcdefg"))
    for ds, fits in ((short, True), (few_shot(7), not windowed)):
        prompts = [it.prompts[x] for it in ds.items for x in ds.languages]
        used.clear()
        got = generate_greedy(model, prompts, 4, batch_size=4)
        assert used and all((u is not None) == fits for u in used)
        assert got == generate_greedy(model, prompts, 4, batch_size=4, share_prefixes=False)

    prompts = [it.prompts[x] for it in SHORT.items for x in SHORT.languages]
    S = NeuronSet(torch.rand(model.cfg.n_layers, model.cfg.d_mlp) < 0.3)
    used.clear()
    with apply(model, deactivate(S)):
        hooked = generate_greedy(model, prompts, 4, batch_size=4)
        assert hooked == generate_greedy(model, prompts, 4, batch_size=4, share_prefixes=False)
    per_batch = lambda s, e: deactivate(S).fwd_hooks(model)  # noqa: E731
    generate_greedy(model, prompts, 4, batch_size=4, hooks_for_batch=per_batch)
    if hasattr(model, "original_model"):
        generate_greedy(model, prompts, 4, batch_size=4, backend="hf")
    assert not used
