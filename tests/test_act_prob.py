"""Act-Prob-90p against its authors' code: a port (re-stated here, not copied; the repository
has no licence) of ``activation.py``'s ``mean_p90_act`` and ``act_prob_90p`` and of
``lang_neurons.py``'s ``_get_set_indep_neurons``, run on recorded pre-activations of a tiny
model, must give the library's thresholds, relevance and sets bit for bit."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

import tl_multineuron as tlm
from tl_multineuron.sharing.act_prob import batch_quantile

TEXTS = {
    "en": ("the cat sat on the mat and the dog sat on the log", "Up", "dogs bark at night"),
    "de": ("die Katze sass auf der Matte und der Hund", "Ja", "Hunde bellen nachts laut"),
    "fr": ("le chat dort sur le tapis pendant que le chien", "Oui", "les chiens aboient"),
}


def authors_mean_p90(batches: list[list[torch.Tensor]]) -> torch.Tensor:
    """activation.py, get_act_stat_data, the p90 lines: per batch and layer the 0.90
    quantile of act.flatten(0, 1) in float32, summed over batches in float32, / N."""
    L, d = len(batches[0]), batches[0][0].shape[-1]
    mean_p90 = torch.zeros(L, d)
    N = 0
    for acts in batches:  # acts: per layer (b, T, d)
        p90 = [torch.quantile(a.flatten(0, 1).to(torch.float32), q=0.90, dim=0) for a in acts]
        mean_p90 += torch.stack(p90, dim=0)
        N += 1
    return mean_p90 / N


def authors_relevance(batches: list[list[torch.Tensor]], mean_p90: torch.Tensor) -> torch.Tensor:
    """activation.py, get_relevance_data, the act_prob_90p lines: per batch and layer
    (act > mean_p90).to(float16).mean(dim=(0, 1)), summed over batches in float32, / N."""
    L, d = mean_p90.shape
    mean_rel = torch.zeros(L, d)
    N = 0
    for acts in batches:
        theta = []
        for k, a in enumerate(acts):
            rel = (a > mean_p90[k]).to(torch.float16)
            theta.append(rel.mean(dim=(0, 1)))
        mean_rel += torch.stack(theta, dim=0)
        N += 1
    return mean_rel / N


def authors_select(rel: dict[str, torch.Tensor], rate: float) -> dict[str, torch.Tensor]:
    """lang_neurons.py, _get_set_indep_neurons, with its 0.00125 as ``rate``."""
    L, d = next(iter(rel.values())).shape
    m = round(rate * L * d)
    out = {}
    for lang, r in rel.items():
        _, top = torch.topk(r.flatten(), k=m, largest=True)
        li, ni = torch.unravel_index(top, (L, d))
        out[lang] = torch.stack((li, ni), dim=1)
    return out


def _recorded(model, rows: list[list[int]], batch: int) -> list[list[torch.Tensor]]:
    """Per batch of equal rows, per layer, the pre-activations (b, T, d) of a plain forward."""
    out = []
    for s in range(0, len(rows), batch):
        _, cache = model.run_with_cache(torch.tensor(rows[s : s + batch]))
        out.append([cache[f"blocks.{k}.mlp.hook_pre"] for k in range(model.cfg.n_layers)])
    return out


@pytest.mark.parametrize("kind", ["gated", "gelu"])
def test_equals_the_authors_on_recorded_activations(kind):
    model = tiny_model(kind, seed=4, n_ctx=64, d_mlp=40)
    corpus = tlm.Corpus(TEXTS, "toy")
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    stats = tlm.ActProbStats(corpus.languages, L, D)
    recorded = {}
    for lang in corpus.languages:  # LAPE's rows: equal lengths, no BOS, no padding
        rows = tlm.token_rows(model, corpus, lang, "lape:5")
        recorded[lang] = _recorded(model, rows, batch=3)
        for acts in recorded[lang]:
            stats.add_quantiles(lang, torch.stack([a.flatten(0, 1) for a in acts], dim=1))
    stats.fix_thresholds()
    for lang in corpus.languages:
        for acts in recorded[lang]:
            stats.add_shares(lang, torch.stack([a.flatten(0, 1) for a in acts], dim=1))
    rel = {}
    for i, lang in enumerate(corpus.languages):
        p90 = authors_mean_p90(recorded[lang])
        assert torch.equal(stats.thresholds[i], p90), lang
        rel[lang] = authors_relevance(recorded[lang], p90)
        assert torch.equal(stats.relevance()[i], rel[lang]), lang
    rate = 0.05  # k = round(0.05 * 2 * 40) = 4 (0.00125 would round to 0 on a tiny model)
    sets = tlm.token_language_sets(stats, "act-prob-90p", top_rate=rate)
    theirs = authors_select(rel, rate)
    for i, lang in enumerate(corpus.languages):
        mine = {tuple(r) for r in sets.masks[i].nonzero().tolist()}
        assert mine == {tuple(r) for r in theirs[lang].tolist()} and len(mine) == 4, lang
    # the relevance is near 1 - q by construction (per-language thresholds), not exactly
    assert abs(float(stats.relevance().mean()) - 0.1) < 0.1


def test_record_act_prob_end_to_end_and_padding_left_out():
    """record_act_prob on one-text-per-row batches (padded, BOS first) equals the statistics
    fed by hand with each row's own tokens only (no BOS, no padding)."""
    model = tiny_model("gated", seed=5, n_ctx=64, d_mlp=32)
    corpus = tlm.Corpus(TEXTS, "toy")
    got = tlm.record_act_prob(model, corpus, batch_size=2)
    assert got.site == "mlp.hook_pre" and got.meta["bos_per_row"] is True
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    ref = tlm.ActProbStats(corpus.languages, L, D)
    per_batch = {}
    for lang in corpus.languages:
        rows = tlm.token_rows(model, corpus, lang)
        per_batch[lang] = []
        for s in range(0, len(rows), 2):
            parts = []
            for r in rows[s : s + 2]:
                _, cache = model.run_with_cache(torch.tensor([r]))
                parts.append(torch.stack([cache[f"blocks.{k}.mlp.hook_pre"][0, 1:]
                                          for k in range(L)], dim=1))  # fmt: skip
            per_batch[lang].append(torch.cat(parts))
            ref.add_quantiles(lang, per_batch[lang][-1])
    ref.fix_thresholds()
    for lang in corpus.languages:
        for acts in per_batch[lang]:
            ref.add_shares(lang, acts)
    torch.testing.assert_close(got.thresholds, ref.thresholds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.relevance(), ref.relevance(), rtol=0, atol=1e-3)
    assert torch.equal(got.quantile_batches, torch.tensor([2, 2, 2]))


def test_batch_quantile_blocks_and_accumulator(tmp_path):
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(7, 3, 5, generator=g)
    want = torch.quantile(acts.reshape(7, 15), 0.9, dim=0).view(3, 5)
    assert torch.equal(batch_quantile(acts, 0.9), want)
    s = tlm.ActProbStats(("en", "de"), 3, 5)
    with pytest.raises(tlm.MultiNeuronError, match="pass 2 needs the thresholds"):
        s.add_shares("en", acts)
    s.add_quantiles("en", acts)
    with pytest.raises(tlm.MultiNeuronError, match=r"no batch of text for language\(s\) \['de'\]"):
        s.fix_thresholds()
    s.add_quantiles("de", acts[:3])
    s.fix_thresholds()
    with pytest.raises(tlm.MultiNeuronError, match="pass 1 is over"):
        s.add_quantiles("en", acts)
    s.add_shares("en", acts)
    s.add_shares("de", acts)
    s.save(tmp_path / "a.pt")
    back = tlm.ActProbStats.load(tmp_path / "a.pt")
    assert back.equals(s) and torch.equal(back.relevance(), s.relevance())
    merged = back.merge(tlm.ActProbStats(("en", "de"), 3, 5, thresholds=s.thresholds))
    assert torch.equal(merged.relevance(), s.relevance())
    with pytest.raises(tlm.MultiNeuronError, match="different thresholds"):
        back.merge(tlm.ActProbStats(("en", "de"), 3, 5))
    with pytest.raises(tlm.MultiNeuronError, match="quantile 1.0"):
        tlm.ActProbStats(("en", "de"), 3, 5, q=1.0)
    with pytest.raises(tlm.MultiNeuronError, match="recorded at quantile 0.9, asked for 0.8"):
        tlm.token_language_sets(s, "act-prob-90p", quantile=0.8)
    masks, scores = tlm.act_prob_select(s.relevance(), top_rate=2 / 15)
    assert masks.sum((1, 2)).tolist() == [2, 2] and torch.equal(scores, s.relevance())
