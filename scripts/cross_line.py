"""Cross-line agreement: the same analysis under TransformerLens 3.x (HookedTransformer) and 4.x
(TransformerBridge) on the embedded model.

Run once per environment, then compare:

    .venv/bin/python scripts/cross_line.py save /tmp/tl4.pt --limit 128
    .venv-tl3/bin/python scripts/cross_line.py save /tmp/tl3.pt --limit 128
    .venv/bin/python scripts/cross_line.py compare /tmp/tl4.pt /tmp/tl3.pt \
        --out docs/compat/cross-line.md

``save`` records the last-token post-activations of every neuron for the task's items x
languages, their sharing categories (threshold 0), the norm-aware contribution and effective
scores, and integrated gradients (logprob target, 32-point Gauss-Legendre) for the first
``--ig-items`` prompts at layers 0, 8 and 17. ``compare`` reports the share of neurons whose
category agrees, relative differences (max |a - b| / max |b| per tensor) and top-5% overlap.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

IG_LAYERS = (0, 8, 17)


def save(args: argparse.Namespace) -> None:
    from tl_multineuron import load_model, load_task, native_kind, tl_version
    from tl_multineuron.attribution.analysis import (
        AttributionConfig,
        answers_of,
        final_residual_hook,
        new_attribution_stats,
        update_direct_scores,
    )
    from tl_multineuron.attribution.scores import integrated_gradients
    from tl_multineuron.backends.weights import model_weights
    from tl_multineuron.sharing.classification import categorize_acts
    from tl_multineuron.sharing.recording import RecordingConfig, iter_dataset_with

    t0 = time.perf_counter()
    model = load_model("gemma-3-270m")
    ds = load_task(args.task)
    if args.limit:
        ds = ds.head(args.limit)
    cfg = AttributionConfig()
    stats = new_attribution_stats(model, ds, cfg)
    final = final_residual_hook(model)
    layers = list(range(model.cfg.n_layers))
    has_final = model_weights(model).has_final_norm
    acts_all, codes_all, contrib, effect = [], [], [], []
    for s, acts, extras in iter_dataset_with(
        model, ds, RecordingConfig(), 8, extra_hooks=[final] if has_final else [], attention="eager"
    ):
        cats = categorize_acts(acts, 0.0, "gt", ds.languages)
        batch = ds.items[s : s + acts.shape[0]]
        toks = answers_of(model, ds, batch)
        ids = [it.item_id for it in batch]
        out = update_direct_scores(
            stats, model, cfg, acts, cats.codes, toks, layers, ids, extras.get(final)
        )
        acts_all.append(acts)
        codes_all.append(cats.codes)
        contrib.append(out["contribution"])
        effect.append(out["effective"])
    ig = []
    pairs = [(it, x) for it in ds.items for x in ds.languages][: args.ig_items]
    for it, x in pairs:
        tok = int(answers_of(model, ds, [it])[ds.languages.index(x)])
        for layer in IG_LAYERS:
            r = integrated_gradients(model, it.prompts[x], tok, layer, steps=32)
            ig.append(r.attributions.detach().cpu())
    blob = {
        "tl_version": tl_version(),
        "kind": native_kind(),
        "task": args.task,
        "items": len(ds),
        "languages": list(ds.languages),
        "acts": torch.cat(acts_all),
        "codes": torch.cat(codes_all),
        "contribution": torch.cat(contrib),
        "effective": torch.cat(effect),
        "ig": torch.stack(ig) if ig else torch.empty(0),
        "seconds": time.perf_counter() - t0,
    }
    torch.save(blob, args.file)
    print(f"{args.file}: {blob['kind']} (transformer-lens {blob['tl_version']}), {len(ds)} items")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _topk_overlap(a: torch.Tensor, b: torch.Tensor, frac: float = 0.05) -> tuple[float, float]:
    k = max(1, int(round(frac * a.shape[-1])))
    ia, ib = a.topk(k, -1).indices, b.topk(k, -1).indices
    hit = torch.zeros(a.shape, dtype=torch.bool).scatter_(-1, ia, True)
    both = hit.gather(-1, ib).sum(-1).double() / k
    return float(both.mean()), float(both.min())


def compare(args: argparse.Namespace) -> None:
    a, b = torch.load(args.a, weights_only=False), torch.load(args.b, weights_only=False)
    if (a["task"], a["items"], a["languages"]) != (b["task"], b["items"], b["languages"]):
        sys.exit("the two files cover different items")
    same = (a["codes"] == b["codes"]).double().mean().item()
    n = a["codes"].numel()
    c_mean, c_min = _topk_overlap(a["contribution"], b["contribution"])
    e_mean, e_min = _topk_overlap(a["effective"], b["effective"])
    rows = [
        ("neurons whose category agrees", f"{100 * same:.4f}% of {n:,}"),
        ("post-activations, max rel. diff", f"{_rel(a['acts'], b['acts']):.1e}"),
        ("contribution scores, max rel. diff", f"{_rel(a['contribution'], b['contribution']):.1e}"),
        ("effective scores, max rel. diff", f"{_rel(a['effective'], b['effective']):.1e}"),
        (
            "top-5% contribution sets, overlap mean / min",
            f"{100 * c_mean:.2f}% / {100 * c_min:.2f}%",
        ),
        ("top-5% effective sets, overlap mean / min", f"{100 * e_mean:.2f}% / {100 * e_min:.2f}%"),
    ]
    if a["ig"].numel() and b["ig"].numel():
        k = min(len(a["ig"]), len(b["ig"]))
        rows.append(
            (
                f"IG attributions ({k} prompt x layer cases), max rel. diff",
                f"{_rel(a['ig'][:k], b['ig'][:k]):.1e}",
            )
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    head = (
        f"# Cross-line agreement on the embedded model ({a['task']}, {a['items']} items x "
        f"{len(a['languages'])} languages)\n\n"
        f"A: {a['kind']} (transformer-lens {a['tl_version']}); "
        f"B: {b['kind']} (transformer-lens {b['tl_version']}). Relative differences are "
        "max |A - B| / max |B| per tensor.\n\n"
        f"Made by `python scripts/cross_line.py compare {args.a} {args.b}` at commit {commit} "
        "(see the script's docstring for the two `save` runs).\n\n"
    )
    table = "| quantity | agreement |\n| --- | --- |\n" + "".join(
        f"| {k} | {v} |\n" for k, v in rows
    )
    text = head + table
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("file")
    s.add_argument("--task", default="facts")
    s.add_argument("--limit", type=int, default=16)
    s.add_argument("--ig-items", type=int, default=2)
    s.set_defaults(func=save)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--out")
    c.set_defaults(func=compare)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
