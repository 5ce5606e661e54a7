"""LAPE and Act-Prob-90p as their authors run them, and the peers' files both ways, on the
embedded Gemma 3 270M, offline.

1. Running text per language (here the built-in facts items' prompts + answers; a directory of
   LANG.txt files reads with ``tlm.load_corpus(DIR)``), as LAPE's own rows (``--window lape:W``;
   facts' short prompts make short streams, hence rows of 16 tokens here).
2. LAPE's counts (``record_token_stats``) and Act-Prob-90p's two passes (``record_act_prob``),
   each method's sets (``token_language_sets``).
3. Every peer file written and read back: LAPE's ``*.neuron.pth`` and
   ``activation.{lang}.train.{model}``, csalt's ``{lang: LongTensor[m, 2]}`` pickle,
   CLaS-Bench's ``vector.{lang}.{model}``.

    python examples/peer_files.py [--out peer_files] [--items 16] [--window lape:16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import tl_multineuron as tlm


def main(out: Path, n_items: int, window: str) -> None:
    model = tlm.load_model(tlm.EMBEDDED_MODEL)
    L, D, name = model.cfg.n_layers, model.cfg.d_mlp, "gemma-3-270m"
    corpus = tlm.corpus_from_dataset(tlm.load_task("facts").head(n_items))

    tokens = tlm.record_token_stats(model, corpus, window=window, progress=True)
    act_prob = tlm.record_act_prob(model, corpus, window=window, progress=True)
    lape = tlm.token_language_sets(tokens, "lape")
    ap = tlm.token_language_sets(act_prob, "act-prob-90p")
    for sets in (lape, ap):
        sizes = {x: sets.size(x) for x in sets.languages}
        print(f"{sets.method}: neurons per language {sizes}")

    out.mkdir(parents=True, exist_ok=True)
    lape.save_lape(out / f"{name}.neuron.pth")
    back = tlm.load_lape_sets(out / f"{name}.neuron.pth", lape.languages, D, L)
    assert torch.equal(back.masks, lape.masks)

    tokens.save_lape(out, name)  # activation.{lang}.train.{model}
    counts = tlm.load_lape_activations(out, tokens.languages, name, L, D)
    assert torch.equal(counts.over_zero, tokens.over_zero)

    ap.save_csalt(out / "act_prob_90p.pkl")  # a pickle: read only with allow_pickle=True
    back = tlm.load_csalt_sets(out / "act_prob_90p.pkl", L, D, allow_pickle=True)
    assert torch.equal(back.masks, ap.masks)

    vectors = tlm.record_language_vectors(model, corpus, window=window)
    vectors.save_clas(out, name)  # vector.{lang}.{model}
    back = tlm.load_clas_vectors(out, corpus.languages, name, L, model.cfg.d_model)
    assert back.equals(vectors)
    d = back.direction("ja", "en", layer=L // 2)
    print(f"CLaS-Bench diff-means direction en -> ja at layer {L // 2}: norm {d.norm():.2f}")
    print(f"files in {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("peer_files"))
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument(
        "--window",
        default="lape:16",
        help="LAPE's rows (one stream per language, no BOS, remainder dropped) of this length",
    )
    args = ap.parse_args()
    main(args.out, args.items, args.window)
