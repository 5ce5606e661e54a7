"""Half-precision recording vs float32 on the embedded model: which activity decisions change.

    .venv/bin/python scripts/half_precision.py --task facts --limit 32 \
        --out docs/scale/half_precision.md

For each dtype (bfloat16, float16) the same items are recorded (last token, mlp.hook_post) and
compared with float32, decision by decision (item x language x layer x neuron, threshold 0):
how many decisions flip, and how close to the threshold the float32 activation of every flip
was, in units of the half dtype's rounding at that activation's layer scale
(eps x RMS of the layer's float32 activations). Categories are compared per item, layer and
neuron. The claim it tests: counts equal float32 wherever the activation is not within
rounding of the threshold.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import torch

from tl_multineuron.backends.models import load_model
from tl_multineuron.data.tasks import load_task
from tl_multineuron.sharing.classification import categorize
from tl_multineuron.sharing.recording import RecordingConfig, iter_dataset

EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def record_all(model, ds, batch):
    return torch.cat(
        [a.float().cpu() for _, a in iter_dataset(model, ds, RecordingConfig(), batch)]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="facts")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ds = load_task(a.task).head(a.limit)
    t0 = time.perf_counter()
    ref = record_all(load_model("gemma-3-270m", dtype="float32"), ds, a.batch_size)
    rms = ref.pow(2).mean(dim=(0, 1, 3), keepdim=True).sqrt()  # per layer
    act32 = ref > 0
    cats32 = categorize(act32.unsqueeze(0), ds.languages).codes[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for name, dt in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        acts = record_all(load_model("gemma-3-270m", dtype=name), ds, a.batch_size)
        act = acts > 0
        flip = act != act32
        margin = (ref.abs() / (EPS[dt] * rms))[flip]  # |a32 - 0| in rounding units
        err = ((acts - ref).abs() / (EPS[dt] * rms)).flatten()
        cats = categorize(act.unsqueeze(0), ds.languages).codes[0]
        bad = int((~torch.isfinite(acts)).sum())
        fin = err[torch.isfinite(err)]
        frac = torch.stack([(cats == c).float().mean((0, 2)) for c in range(4)], -1)
        frac32 = torch.stack([(cats32 == c).float().mean((0, 2)) for c in range(4)], -1)
        rows.append(
            (
                name,
                f"{flip.sum().item():,} of {flip.numel():,} ({100 * flip.float().mean():.3f}%)",
                f"{bad:,}",
                f"{margin.max().item():.1f}" if flip.any() else "-",
                f"{fin.quantile(0.5).item():.2f} / {fin.quantile(0.99).item():.2f}",
                f"{100 * (cats != cats32).float().mean():.3f}%",
                f"{100 * (frac - frac32).abs().max().item():.3f}",
            )
        )
    head = (
        f"Made by `scripts/half_precision.py --task {a.task} --limit {a.limit}` at commit "
        f"{commit} ({time.perf_counter() - t0:.0f} s on CPU): {len(ds)} items x "
        f"{ds.n_languages} languages x {ref.shape[2]} layers x {ref.shape[3]} neurons, last "
        "token, `mlp.hook_post`, threshold 0. Rounding unit u = eps(dtype) x RMS of the "
        "layer's float32 activations (eps: bf16 2^-8, fp16 2^-11).\n\n"
    )
    table = (
        "| dtype | activity decisions that differ from float32 | non-finite activations | "
        "largest float32 \\|a\\| of a flipped decision, in u | \\|a_half - a32\\| in u, "
        "median / 99th pct (finite) | item x layer x neuron categories that differ | layer "
        "category fractions, max \\|diff\\| (points) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )
    text = "# Half-precision recording vs float32\n\n" + head + table
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
