"""Write docs/models.md from the architecture matrix: runs tests/test_families.py and
tests/test_experts.py (tiny random models of every family, each check against HF's own
modules) and tabulates every (family, check) outcome.

    .venv/bin/python scripts/models_table.py   # ~4 min on 2 CPU cores (real Gemma, SmolLM2 too)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from families import FAMILIES  # noqa: E402

DENSE_CHECKS = {
    "test_recorded_activations_are_the_down_projection_input": "activations",
    "test_effective_scores_sum_to_hf_direct_logit_attribution": "attribution",
    "test_scores_equal_hf_forward_and_a_hand_made_edit": "scores + edit",
    "test_prefix_cache_and_folding_equal_full_passes_past_the_window": "prefix cache / fold",
    "test_amplified_generation_equals_a_hand_made_hook_and_leaves_none": "amplified generation",
}
MOE_CHECKS = {
    "test_every_neuron_entry_point_refuses_moe_blocks": "neuron sites refused",
    "test_expert_site_records_hf_routing_and_categories": "experts: routing + categories",
    "test_expert_edits_equal_router_masking_by_hand": "experts: scored edits",
    "test_amplified_expert_generation_equals_a_hand_made_router_hook": "experts: generation",
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "matrix.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
               "tests/test_families.py", "tests/test_experts.py", f"--junitxml={xml}"]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, check=False)
        cases = ET.parse(xml).getroot().iter("testcase")
        outcome: dict[tuple[str, str], str] = {}
        for c in cases:
            m = re.match(r"(test_\w+)\[([\w-]+)\]", c.get("name", ""))
            if not m:
                continue
            bad = c.find("failure") is not None or c.find("error") is not None
            skipped = c.find("skipped") is not None
            outcome[m.group(1), m.group(2)] = "FAIL" if bad else ("skip" if skipped else "ok")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    import tl_multineuron  # noqa: F401  (versions below)
    from tl_multineuron.backends.versions import stack_text

    lines = [
        "# Model families",
        "",
        "Which decoder families the library is verified on, from the architecture matrix: for "
        "every family a tiny random model (2 layers, hidden 64, norm weights perturbed so "
        "that norms matter, seed 0, prompts longer than every sliding window of 16), each "
        "check against the HF model's own modules, never against the library "
        "(`tests/test_families.py`, `tests/test_experts.py`, fast tier of CI).",
        "",
        f"Made by `python scripts/models_table.py` at {commit} ({stack_text()}).",
        "",
        "Real weights: the same five checks run on **Gemma 3 270M** (gemma3) and "
        "**SmolLM2-135M-Instruct** (llama) as released (rows marked *real weights*; "
        "integration tier, on both TransformerLens lines), beside `tests/test_gemma.py` and "
        "`tests/test_smollm2.py`.",
        "",
        "## Dense families: five checks",
        "",
        "| family | " + " | ".join(DENSE_CHECKS.values()) + " |",
        "| --- |" + " --- |" * len(DENSE_CHECKS),
    ]
    real = {"gemma3": "real-gemma", "llama": "real-smollm2"}
    for name, fam in FAMILIES.items():
        if fam.moe:
            continue
        cells = [outcome.get((t, name), "not run") for t in DENSE_CHECKS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if name in real:
            cells = [outcome.get((t, real[name]), "not run") for t in DENSE_CHECKS]
            label = f"{name}, *real weights: {fam.real_weights}*"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "- activations: recorded `mlp.hook_post` equals the input of HF's down-projection "
        "(last token and all-token mean);",
        "- attribution: per layer, the summed effective scores equal HF's direct logit "
        "attribution of that MLP (through any post-MLP norm, residual multiplier, the final "
        "norm with its scale held fixed, and the logit scale);",
        "- scores + edit: one-pass log-probs equal HF's forward; a deactivated set equals the "
        "same edit by hand on HF's down-projection;",
        "- prefix cache / fold: cached, folded and tiled scores equal full passes on prompts "
        "past the window;",
        "- amplified generation: equals HF's greedy generation with a hand-made hook; no hook "
        "is left behind.",
        "",
        "What the matrix found and what was fixed: Gemma 2 failed at the defaults (SDPA chosen "
        "for soft-capped attention; `auto` now picks eager, and every entry point takes "
        "`attention`); Granite and Cohere were silently wrong (their logit scale and Granite's "
        "residual multiplier are now in scores, log-probs and attribution); "
        "`Gemma3ForConditionalGeneration` (Gemma 3 4B-27B) folded one-token rows past its "
        "window (the window is now read from `text_config`) and its loading ran `pip install "
        "torchvision` (blocked); OPT's `d_mlp` is taken from `W_out` (TL sets 4 x d_model).",
        "",
        "## Mixture-of-experts families",
        "",
        "TransformerLens exposes no per-expert neuron hook: `mlp.hook_post` of a MoE block is "
        "its output in the residual space. Neuron sites are refused there at every entry "
        "point, naming the alternatives: **experts as units** (`--hook "
        "mlp.hook_expert_weights`: a token's routing weight per expert, active = routed; "
        "deactivating sets an expert's routing weight to 0, amplifying scales it) and, on "
        "Qwen-MoE, the **shared expert's neurons** (`mlp.shared_expert.hook_post`).",
        "",
        "| family | " + " | ".join(MOE_CHECKS.values()) + " |",
        "| --- |" + " --- |" * len(MOE_CHECKS),
    ]
    for name, fam in FAMILIES.items():
        if not fam.moe:
            continue
        cells = [outcome.get((t, name), "not run") for t in MOE_CHECKS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Attribution (contribution, effective, integrated gradients) has no expert form and is "
        "refused on MoE blocks. GPT-OSS's attention sinks make SDPA wrong (routing weights off "
        "by 2e-3): `attention='auto'` runs it eager.",
        "",
    ]
    out = ROOT / "docs" / "models.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
