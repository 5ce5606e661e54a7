"""A straightforward re-implementation of the paper's notebook algorithm (Python sets of
(layer, neuron) tuples, per-language loops): the reference for tests and benchmarks."""

from __future__ import annotations

import numpy as np


def naive_categories(acts: np.ndarray, threshold: float = 0.0) -> dict:
    """acts: [lang, layer, neuron]. Returns sets of (layer, neuron) per category and
    a dict language index -> set of specific neurons."""
    n_lang, n_layer, d = acts.shape
    active_sets = []
    for lang in range(n_lang):
        s = set()
        for layer in range(n_layer):
            for n in np.where(acts[lang, layer] > threshold)[0]:
                s.add((layer, int(n)))
        active_sets.append(s)
    all_shared = set.intersection(*active_sets)
    union = set.union(*active_sets)
    specific = {}
    for lang in range(n_lang):
        others = set().union(*(active_sets[k] for k in range(n_lang) if k != lang))
        specific[lang] = active_sets[lang] - others
    spec_all = set().union(*specific.values())
    partial = union - all_shared - spec_all
    everything = {(layer, n) for layer in range(n_layer) for n in range(d)}
    return {
        "all-shared": all_shared,
        "partial-shared": partial,
        "specific": spec_all,
        "non-activated": everything - union,
        "by_language": specific,
    }
