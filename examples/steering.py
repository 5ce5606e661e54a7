"""Steering on the embedded Gemma 3 270M, offline: both studies of ``tl-multineuron steer``
through the Python API, then the report.

1. Accuracy steering: scale the all-shared neurons (alpha) and the row language's specific
   neurons (beta), or shift both toward the cross-language mean (Int-mu), in one layer band;
   the band and strengths are chosen on calibration items only, then evaluated once on held-out
   items against no steering and equal-size random neurons in the same layers.
2. Output-language control: English prompts steered toward Russian and Japanese (LAPE-style
   target-specific neurons, source-specific neurons off, or a residual difference of means),
   scored by lingua (language) and by the target-language gold answer (relevance).

Small sizes by default so it runs in a few minutes on a laptop CPU; the defaults of
``tl-multineuron steer`` are the full study.

    python examples/steering.py [--out steering_results] [--items 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tl_multineuron as tlm
from tl_multineuron.report.page import build_report


def main(out: Path, n_items: int) -> Path:
    model = tlm.load_model("gemma-3-270m")
    data = tlm.load_task("facts", ["en", "de", "ru", "ja"])
    n = model.cfg.n_layers

    # 1. Accuracy steering: two bands near the output, one alpha, damped or untouched specifics.
    acc_cfg = tlm.AccuracySteerConfig(
        eval_items=n_items,
        calibration=3 * n_items,
        search_items=n_items,
        bands=((n - 6, n), (n - 3, n)),
        alphas=(1.25,),
        betas=(1.0, 0.5),
        mu_strengths=(0.5,),
        seeds=(0, 1),
    )
    comp = tlm.run_accuracy_study(
        model, data, out / "accuracy", acc_cfg, {"model": "gemma-3-270m"}, overwrite=True,
        log=print,
    )  # fmt: skip
    acc = comp[(comp.metric == "accuracy") & (comp.reference == "none")]
    print(acc[["language", "value", "reference_value", "delta", "ci_low", "ci_high"]].round(2))

    # 2. Output-language control, en -> ru / ja, one strength of each method.
    lang_cfg = tlm.LanguageSteerConfig(
        source="en",
        targets=("ru", "ja"),
        strengths=(1.0, 4.0),
        eval_items=n_items,
        calibration=3 * n_items,
        max_new_tokens=6,
    )
    table = tlm.run_language_study(
        model, data, out / "language", lang_cfg, {"model": "gemma-3-270m"}, overwrite=True,
        log=print,
    )  # fmt: skip
    print(table[["target", "method", "strength", "language_control", "relevance",
                 "harmonic_mean"]].round(1))  # fmt: skip

    # The edits are plain TL hooks: the chosen configuration in your own forward pass.
    chosen = json.loads((out / "accuracy" / "chosen.json").read_text())
    cfg = tlm.SteerConfig.from_dict(chosen["config"])
    sets = tlm.SteeringSets.from_stats(tlm.SharingStats.load(out / "accuracy" / "calibration.pt"))
    prompt = data[len(data) - 1].prompts["de"]
    edit = sets.intervention(cfg, torch.tensor([sets.lang_index("de")]))
    hooks = edit.fwd_hooks(model) if edit is not None else []
    logits = model.run_with_hooks(prompt, fwd_hooks=hooks)
    top = model.tokenizer.decode(logits[0, -1].argmax())
    print(f"{chosen['name']}: {prompt!r} -> {top!r} ({len(hooks)} hooked blocks)")

    path = build_report(out)
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="steering_results")
    ap.add_argument("--items", type=int, default=8)
    a = ap.parse_args()
    main(Path(a.out), a.items)
