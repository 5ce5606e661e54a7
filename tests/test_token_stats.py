"""Token-level statistics over running text (LAPE's over_zero / n): counts equal a plain
forward per row; streamed, merged and saved losslessly; corpora and their errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model, toy_dataset

import tl_multineuron as tlm
from tl_multineuron.sharing.recording import encode
from tl_multineuron.sharing.token_stats import token_site

TEXTS = {
    "en": ["the cat sat on the mat", "dogs bark at night", "a b"],
    "de": ["die Katze sass auf der Matte", "Hunde bellen nachts"],
    "fr": ["le chat dort", "les chiens aboient la nuit", "xyz"],
}


@pytest.fixture(scope="module", params=["gated", "gelu"])
def model(request):
    return tiny_model(request.param, seed=2, n_ctx=128)


def _naive(model, rows, skip=1):
    """over_zero [layer, d_mlp], the sum of squares and the token count of ``rows``, one plain
    forward each, the site computed by hand (act(gate pre-activation) on the gated model,
    hook_post else); the first ``skip`` positions (the BOS) not counted."""
    L = model.cfg.n_layers
    gated = model.cfg.gated_mlp
    hook = "mlp.hook_pre" if gated else "mlp.hook_post"
    over = torch.zeros(L, model.cfg.d_mlp, dtype=torch.long)
    sq = torch.zeros(L, model.cfg.d_mlp, dtype=torch.float64)
    n = 0
    for ids in rows:
        _, cache = model.run_with_cache(torch.tensor([ids]))
        for x in range(L):
            a = cache[f"blocks.{x}.{hook}"][0, skip:]
            a = F.gelu(a) if gated else a
            over[x] += (a > 0).sum(0)
            sq[x] += a.double().square().sum(0)
        n += len(ids) - skip
    return over, sq, n


@pytest.mark.parametrize("window", [None, 7])
def test_counts_equal_a_plain_forward_per_row(model, window):
    corpus = tlm.Corpus({k: tuple(v) for k, v in TEXTS.items()}, "toy")
    stats = tlm.record_token_stats(model, corpus, window=window, batch_size=2)
    assert stats.site == token_site(model) == ("gate" if model.cfg.gated_mlp else "mlp.hook_post")
    bos = model.tokenizer.bos_token_id
    for i, lang in enumerate(corpus.languages):
        if window is None:
            rows = [[bos, *encode(model, t, prepend_bos=False)] for t in TEXTS[lang]]
        else:
            stream = [t for text in TEXTS[lang] for t in encode(model, text, prepend_bos=False)]
            rows = [[bos, *stream[s : s + window]] for s in range(0, len(stream), window)]
            rows = [r for r in rows if len(r) > 2] if len(rows) > 1 else rows
        assert tlm.token_rows(model, corpus, lang, window) == rows
        over, sq, n = _naive(model, rows)
        assert int(stats.n_tokens[i]) == n
        assert torch.equal(stats.over_zero[i], over), lang
        torch.testing.assert_close(stats.sq_sum[i], sq, rtol=1e-5, atol=1e-6)
    p = stats.probabilities()
    assert p.dtype == torch.float32 and float(p.max()) <= 1
    rms = (stats.sq_sum / stats.n_tokens.double()[:, None, None]).mean(0).sqrt()
    torch.testing.assert_close(stats.rms(), rms)


def test_lape_window_is_lapes_rows(model):
    """window 'lape:W': one stream per language (one-token lines are just tokens of it), rows
    of W with no BOS, the remainder dropped; every position counted. 'lape' takes n_ctx; a
    stream shorter than one row is an error naming the language."""
    texts = {"en": ("the cat sat on the mat", "Up", "dogs bark"), "de": ("die Katze", "Ja")}
    corpus = tlm.Corpus(texts, "mv")
    stats = tlm.record_token_stats(model, corpus, window="lape:6", batch_size=2)
    for i, lang in enumerate(corpus.languages):
        stream = [t for x in texts[lang] for t in encode(model, x, prepend_bos=False)]
        rows = [stream[s : s + 6] for s in range(0, len(stream) // 6 * 6, 6)]
        assert tlm.token_rows(model, corpus, lang, "lape:6") == rows
        over, _, n = _naive(model, rows, skip=0)
        assert n == len(stream) // 6 * 6 == int(stats.n_tokens[i])
        assert torch.equal(stats.over_zero[i], over)
    assert stats.meta["bos_per_row"] is False and stats.meta["window"] == "lape:6"
    assert all(len(r) == 128 for r in tlm.token_rows(model, tlm.Corpus({"en": ("x" * 300,)}),
                                                      "en", "lape"))  # fmt: skip
    with pytest.raises(tlm.MultiNeuronError, match="language 'de': the stream holds 11 tokens"):
        tlm.token_rows(model, corpus, "de", "lape:12")
    with pytest.raises(tlm.MultiNeuronError, match="'lape:W'"):
        tlm.token_rows(model, corpus, "de", "lape:x")
    with pytest.raises(tlm.MultiNeuronError, match="exceeds the model's context"):
        tlm.token_rows(model, corpus, "de", "lape:4096")


def test_streamed_merged_saved_losslessly(tmp_path):
    model = tiny_model("gated", seed=3, n_ctx=128)
    whole = tlm.Corpus({k: tuple(v) for k, v in TEXTS.items()}, "toy")
    one = tlm.record_token_stats(model, whole, batch_size=1)
    a = tlm.Corpus({k: tuple(v[:1]) for k, v in TEXTS.items()}, "toy")  # two shards of it
    b = tlm.Corpus({k: tuple(v[1:]) for k, v in TEXTS.items()}, "toy")
    merged = tlm.record_token_stats(model, a).merge(tlm.record_token_stats(model, b))
    assert merged.equals(one) and merged.n_items == one.n_items
    with pytest.raises(tlm.MultiNeuronError, match="same shard twice"):
        merged.merge(tlm.record_token_stats(model, a))
    # continued: a second corpus added to the same statistics
    cont = tlm.record_token_stats(model, a)
    tlm.record_token_stats(model, b, stats=cont)
    assert cont.equals(one)
    one.save(tmp_path / "t.pt")
    back = tlm.TokenStats.load(tmp_path / "t.pt")
    assert back.equals(one) and back.meta == one.meta
    sets = tlm.token_language_sets(back, "lape", top_rate=0.1, filter_rate=0.5)
    assert sets.params["unit"] == "token" and sets.masks.shape == (3, 2, 24)
    with pytest.raises(tlm.MultiNeuronError, match="act-prob-90p reads ActProbStats"):
        tlm.token_language_sets(back, "act-prob-90p")
    with pytest.raises(tlm.MultiNeuronError, match="defined on items"):
        tlm.token_language_sets(back, "magnitude")


def test_token_lape_finds_planted_neurons():
    """Counts made by hand: neuron 3 of layer 1 fires on 90% of German tokens and 1% of the
    others'; neuron 5 of layer 0 on 80% of French tokens; everything else on 30-40% of every
    language's. LAPE (top 2 of 48 neurons) finds exactly those two, one language each."""
    N, L, D = 3, 2, 24
    n = torch.tensor([1000, 2000, 500])
    g = torch.Generator().manual_seed(0)
    rate = 0.3 + 0.1 * torch.rand(N, L, D, generator=g)
    rate[:, 1, 3] = torch.tensor([0.01, 0.9, 0.01])
    rate[:, 0, 5] = torch.tensor([0.01, 0.01, 0.8])
    over = (rate * n[:, None, None]).round().long()
    stats = tlm.TokenStats(("en", "de", "fr"), L, D, "gate", n, over)
    sets = tlm.token_language_sets(stats, "lape", top_rate=2 / 48, filter_rate=0.9,
                                   activation_bar_ratio=0.9)  # fmt: skip
    assert [m.nonzero().tolist() for m in sets.masks] == [[], [[1, 3]], [[0, 5]]]


def test_corpus_files_and_errors(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "en.txt").write_text("one line\n\nanother line\n", encoding="utf-8")
    (d / "de.txt").write_text("eine Zeile\n", encoding="utf-8")
    c = tlm.load_corpus(d)
    assert c.languages == ("de", "en") and c.texts["en"] == ("one line", "another line")
    assert tlm.load_corpus(d, ["en", "de"]).languages == ("en", "de")
    assert tlm.load_corpus({"en": d / "en.txt", "de": d / "de.txt"}).n_texts("en") == 2
    err = tlm.MultiNeuronError
    with pytest.raises(err, match="no file for language"):
        tlm.load_corpus(d, ["en", "ja"])
    with pytest.raises(err, match="does not exist"):
        tlm.load_corpus(tmp_path / "nope")
    (d / "fr.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(err, match=r"language 'fr': corpus file .*fr.txt' holds no text"):
        tlm.load_corpus(d)
    with pytest.raises(err, match="at least 2"):
        tlm.load_corpus(d, ["en"])
    model = tiny_model("gelu", n_ctx=16)
    short = tlm.Corpus({"en": ("ok text here", ""), "de": ("gut",)}, "short")
    with pytest.raises(err, match=r"short, language 'en', line 2: '' is no token"):
        tlm.record_token_stats(model, short)
    one = tlm.Corpus({"en": ("ok", "a"), "de": ("gut",)}, "one")  # a one-token line counts once
    assert tlm.record_token_stats(model, one).n_tokens.tolist() == [3, 3]
    long = tlm.Corpus({"en": ("x" * 40,), "de": ("y" * 40,)}, "long")
    with pytest.raises(err, match="exceeds the model's context .16.; pack the texts"):
        tlm.record_token_stats(model, long)
    assert tlm.record_token_stats(model, long, window=10).n_tokens.tolist() == [40, 40]


def test_corpus_from_a_dataset_and_its_split():
    ds = toy_dataset(4, ("en", "de"))
    c = tlm.corpus_from_dataset(ds)
    assert c.texts["de"][1] == ds.items[1].prompts["de"] + ds.target(ds.items[1], "de")
    ident, held = c.split(0.25)
    assert ident.n_texts("en") == 3 and held.n_texts("en") == 1
    assert not set(ident.texts["en"]) & set(held.texts["en"])


def test_corpus_holds_out_a_count_of_texts():
    c = tlm.Corpus({"en": ("a", "b", "c", "d"), "de": ("e", "f", "g")}, "c")
    ident, held = c.split(2)
    assert held.texts == {"en": ("c", "d"), "de": ("f", "g")}
    assert ident.texts == {"en": ("a", "b"), "de": ("e",)}
    with pytest.raises(tlm.MultiNeuronError, match="language 'de' has 3 text"):
        c.split(3)
    with pytest.raises(tlm.MultiNeuronError, match="expected a count >= 1 or a share"):
        c.split(0)
