"""How much the norm-aware scores move the top-K sets (docs/faithful.md, issue 9).

For every (item, language) of a task and every layer: the overlap |A & B| / K of the top-K
neurons by the plain formulas (|a| ||W_out||, a W_out . W_U[:, t]) and by the norm-aware
direct effects (through the post-MLP norm and the final norm, scales from the clean run);
mean and min over rows per layer. Also the range of the post-MLP norm's gains.

Run: python scripts/score_overlap.py [--model gemma-3-270m] [--task facts] [--k 0.05]
     [--out docs/faithful/overlap-gemma-3-270m.md]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from tl_multineuron import load_model, load_task
from tl_multineuron.attribution.analysis import answers_of, final_residual_hook
from tl_multineuron.attribution.scores import contribution_scores, effective_scores
from tl_multineuron.backends.weights import ModelWeights, model_weights
from tl_multineuron.sharing.masks import resolve_k, topk_mask
from tl_multineuron.sharing.recording import RecordingConfig, iter_dataset_with


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--task", default="facts")
    ap.add_argument("--k", type=float, default=0.05)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = load_model(args.model)
    ds = load_task(args.task)
    if args.limit:
        ds = ds.head(args.limit)
    w = model_weights(model)
    plain = ModelWeights(w.W_out, w.W_U, w.out_norms, w.W_E, w.tied)
    k = resolve_k(args.k, model.cfg.d_mlp)
    L = model.cfg.n_layers
    final = final_residual_hook(model)
    sums = {m: torch.zeros(L, dtype=torch.float64) for m in ("contribution", "effective")}
    mins = {m: torch.ones(L, dtype=torch.float64) for m in sums}
    rows = 0
    for s, acts, extras in iter_dataset_with(
        model, ds, RecordingConfig(), 8, extra_hooks=[final] if w.has_final_norm else []
    ):
        n_it, N = acts.shape[:2]
        flat = acts.reshape(n_it * N, L, -1)
        toks = answers_of(model, ds, ds.items[s : s + n_it])
        fs = w.norms.final.scale(extras[final].reshape(n_it * N, -1)) if w.has_final_norm else None
        new = {
            "contribution": contribution_scores(flat, w),
            "effective": effective_scores(flat, toks, w, final_scale=fs),
        }
        old = {
            "contribution": contribution_scores(flat, plain),
            "effective": effective_scores(flat, toks, plain),
        }
        for m in sums:
            ov = (topk_mask(new[m], k) & topk_mask(old[m], k)).sum(-1).double() / k  # [row, L]
            sums[m] += ov.sum(0)
            mins[m] = torch.minimum(mins[m], ov.amin(0))
        rows += n_it * N
    table = pd.DataFrame(
        {
            "layer": range(L),
            "contribution mean": (sums["contribution"] / rows * 100).numpy().round(1),
            "contribution min": (mins["contribution"] * 100).numpy().round(1),
            "effective mean": (sums["effective"] / rows * 100).numpy().round(1),
            "effective min": (mins["effective"] * 100).numpy().round(1),
        }
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    gains = ""
    if w.has_post_norm:
        g = torch.stack([p.gain for p in w.norms.post_mlp])
        gains = (
            f"Post-MLP norm gains (1 + w) span {float(g.abs().min()):.3g} to "
            f"{float(g.abs().max()):.4g} in absolute value.\n\n"
        )
    text = (
        f"# Top-{k} overlap (%), plain formulas vs norm-aware direct effects\n\n"
        f"Model {args.model}, task {args.task}, {len(ds)} items x {len(ds.languages)} languages "
        f"= {rows} rows; overlap = |top-K(plain) & top-K(norm-aware)| / K per row, mean and min "
        f"over rows.\n{gains}Made by `python scripts/score_overlap.py --model {args.model} "
        f"--task {args.task} --k {args.k}` at commit {commit} "
        f"({time.perf_counter() - t0:.0f} s).\n\n" + table.to_markdown(index=False) + "\n"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
