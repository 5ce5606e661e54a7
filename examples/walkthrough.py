"""Walk-through on the embedded Gemma 3 270M, offline: analyze -> attribute -> intervene ->
figures -> report. Small sizes so it runs in a few minutes on a laptop CPU.

    python examples/walkthrough.py [--out walkthrough_results] [--items 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tl_multineuron as tlm
from tl_multineuron.report import plots
from tl_multineuron.report.page import build_report
from tl_multineuron.sharing.views import neuron_activation_view, save_views, token_activations


def main(out: Path, n_items: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model = tlm.load_model("gemma-3-270m")
    langs = ["en", "de", "ru", "ja"]
    data = tlm.load_task("facts", langs)
    calib, test = data.slice(0, 3 * n_items), data.slice(3 * n_items, 4 * n_items)

    # 1. Sharing analysis with a threshold sweep (one forward pass per batch).
    stats = tlm.analyze(model, calib, tlm.AnalysisConfig(thresholds=(0.0, 0.25, 0.5))).stats
    stats.save(out / "stats.pt")
    print(stats.summary().round(1).iloc[[0, 8, 17]])

    # 2. Which categories hold the most important neurons?
    attr = tlm.attribute(
        model,
        test,
        tlm.AttributionConfig(
            methods=("contribution", "effective", "ig"), k=50, ig_steps=20, ig_layers=(17,)
        ),
    ).stats
    attr.save(out / "attribution.pt")
    # enrichment = top-K share / base rate, pooled over layers and languages, with a
    # 95% bootstrap interval over items
    est, lo, hi = attr["contribution"].enrichment_interval(over=(0, 1))
    print(
        f"all-shared enrichment among the top-50 contributors: {est[3]:.2f} "
        f"[{lo[3]:.2f}, {hi[3]:.2f}]"
    )
    ig = attr["ig"]
    print(f"IG completeness: max relative gap {ig.rel_gap_max:.3f} over {ig.n_gaps} runs")

    # 3. Interventions: static all-shared set from the calibration split, in plain TL code.
    shared = tlm.NeuronSet.from_stats(stats, "all-shared", min_frequency=0.9)
    print(f"static all-shared set: {len(shared)} neurons")
    prompt = test[0].prompts["de"]
    for iv in (tlm.deactivate(shared), tlm.amplify(shared, 2.0)):
        with tlm.apply(model, iv):
            ids = tlm.generate_greedy(model, [prompt], max_new_tokens=4)[0]
        print(f"{iv.op:5s}: {prompt.splitlines()[-1]!r} -> {model.tokenizer.decode(ids)!r}")
    # One-pass scoring of the held-out items under conditions, paired comparisons.
    conds = [
        tlm.Condition(),
        tlm.Condition("all-shared", "zero", mode="dynamic"),
        tlm.Condition("random", "zero", mode="dynamic", seed=0),
        tlm.Condition("random", "zero", mode="dynamic", seed=1),
        tlm.Condition("all-shared", "scale", 1.5, "static"),
    ]
    rows = tlm.run_experiment(model, test, conds, calib, min_frequency=0.9)
    rows.to_csv(out / "scores.csv", index=False)
    comp = tlm.paired_comparisons(rows)
    comp.to_csv(out / "comparisons.csv", index=False)
    acc = comp[comp.metric == "accuracy"]
    print(acc[["condition", "reference", "delta", "ci_low", "ci_high", "p_value"]])

    # 4. Figures and a circuitsvis view of the top all-shared neurons of layer 9.
    plots.save_figure(plots.plot_layer_fractions(stats), out / "layer_fractions.png")
    plots.save_figure(plots.plot_enrichment(attr, "contribution"), out / "enrichment.svg")
    neurons = {9: stats.top_neurons("all-shared", 9, 3)}
    toks, acts = token_activations(model, [test[0].prompts[x] for x in langs], neurons)
    view = neuron_activation_view(
        dict(zip(langs, toks, strict=True)),
        dict(zip(langs, acts, strict=True)),
        ["L9"],
        [str(n) for n in neurons[9]],
        "Top all-shared neurons, L9",
    )
    save_views([view], out / "views.json")

    # 5. One self-contained HTML file.
    report = build_report(out)
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("walkthrough_results"))
    ap.add_argument("--items", type=int, default=6)
    a = ap.parse_args()
    main(a.out, a.items)
