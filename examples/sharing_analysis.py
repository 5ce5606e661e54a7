"""Which MLP neurons does Gemma 3 270M share across languages? (runs offline)

python examples/sharing_analysis.py [--items 16]
"""

from __future__ import annotations

import argparse

import tl_multineuron as tlm


def main(n_items: int = 16) -> None:
    model = tlm.load_model("gemma-3-270m")  # embedded default, cached after the first load

    # A built-in parallel task: the same fact-probing item in 8 languages.
    ds = tlm.load_task("facts").head(n_items)
    print(f"{len(ds)} items x {ds.languages}")
    print(repr(ds[0].prompts["ja"]), "->", repr(ds[0].answers["ja"]))

    # One item, by hand: record last-token activations and categorize.
    batch = tlm.tokenize(model, [ds[0].prompts[x] for x in ds.languages])
    acts = tlm.record(model, batch)  # [lang, layer, d_mlp]
    cats = tlm.categorize_acts(acts, threshold=0.0, languages=ds.languages)
    print("layer 0 counts (non / specific / partial / all):", cats.counts()[0].tolist())
    print(
        "neurons specific to Japanese in layer 5:",
        cats.specific_mask("ja")[5].nonzero().flatten()[:10].tolist(),
    )

    # The whole dataset, with a threshold sweep from the same forward passes.
    config = tlm.AnalysisConfig(thresholds=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), batch_size=4)
    result = tlm.analyze(model, ds, config, progress=True)
    stats = result.stats
    print(stats.summary().round(1).head(6))
    print(
        "all-shared fraction by threshold (layer-mean):",
        [round(float(stats.layer_fractions(t)[:, 3].mean()), 3) for t in stats.thresholds],
    )

    # |a| > t: in gated MLPs large negative activations matter as much as positive ones.
    abs_stats = tlm.analyze(model, ds, tlm.AnalysisConfig(criterion="abs")).stats
    print(
        "all-shared under a>0 vs |a|>0:",
        round(float(stats.layer_fractions()[:, 3].mean()), 3),
        round(float(abs_stats.layer_fractions()[:, 3].mean()), 3),
    )

    # Neurons all-shared in at least 90% of items, per-language LAPE, tidy tables.
    shared = stats.neuron_mask("all-shared", min_frequency=0.9)
    print("neurons all-shared in >=90% of items, per layer:", shared.sum(-1).tolist())
    print("lowest-LAPE neuron of the last layer:", int(stats.lape()[-1].nan_to_num(9).argmin()))
    print(stats.to_frame().head())
    print(stats.stability().query("category == 'all-shared'").head())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=16)
    main(ap.parse_args().items)
