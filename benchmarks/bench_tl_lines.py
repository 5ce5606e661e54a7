"""The installed TransformerLens line on the embedded model: greedy generation and one-pass
answer scoring, timed in one run (run it under each environment to compare the lines).

    .venv/bin/python benchmarks/bench_tl_lines.py       # TL 4.x, TransformerBridge
    .venv-tl3/bin/python benchmarks/bench_tl_lines.py   # TL 3.x, HookedTransformer

Prints one JSON line: the line, seconds for ``generate_greedy`` (2 facts items x 8 languages,
4 new tokens), seconds for ``score_answers`` (8 qa items x 8 languages, 2 edits) with the
default cache mode and with full passes, and for TL 3.x also generation without the
pre-transposed weights (TL 3.9 copies ``W.T.contiguous()`` on every forward) as a ratio.
"""

from __future__ import annotations

import json
import time

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.tl_compat import is_bridge, tl_version
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.experiments.evaluation import generate_greedy
from tl_multineuron.experiments.scoring import answer_rows, score_answers, scoring_path


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    torch.manual_seed(0)
    model = tlm.load_model("gemma-3-270m")
    print(versions_line(), flush=True)
    print(f"scoring path: {scoring_path(model)}", flush=True)
    facts = tlm.load_task("facts").slice(0, 2)
    prompts = [it.prompts[x] for it in facts.items for x in facts.languages]
    generate_greedy(model, prompts[:2], 1, 8)  # warm-up
    gen_s, gens = _timed(lambda: generate_greedy(model, prompts, 4, 8))
    qa = tlm.load_task("qa").slice(0, 8)
    pairs = [(it, x) for it in qa.items for x in qa.languages]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in pairs], [it.answers[x] for it, x in pairs]
    )
    shared = tlm.NeuronSet.from_stats(tlm.analyze(model, qa).stats, "all-shared", 0.9)
    edits = [None, lambda b: tlm.deactivate(shared)]
    auto_s, _ = _timed(lambda: score_answers(model, rows, edits, cache="auto"))
    full_s, _ = _timed(lambda: score_answers(model, rows, edits, cache="none"))
    out = {
        "tl": tl_version(),
        "model": type(model).__name__,
        "generate_16x4_s": round(gen_s, 2),
        "score_auto_s": round(auto_s, 2),
        "score_full_passes_s": round(full_s, 2),
        "rows": len(rows.answers),
        "first_generation": gens[0],
    }
    if not is_bridge(model):  # undo the pre-transposed storage: what TL 3.9 does by itself
        for m in [model.unembed, *[b.mlp for b in model.blocks]]:
            for name in ("W_U", "W_in", "W_gate", "W_out"):
                w = getattr(m, name, None)
                if isinstance(w, torch.nn.Parameter):
                    setattr(m, name, torch.nn.Parameter(w.detach().contiguous()))
        raw_s, raw = _timed(lambda: generate_greedy(model, prompts, 4, 8))
        assert raw == gens, "the pre-transposed storage changed a generation"
        out["generate_16x4_tl_default_storage_s"] = round(raw_s, 2)
        out["speedup_pre_transposed"] = round(raw_s / gen_s, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
