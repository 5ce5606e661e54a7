"""Which languages share neurons with which, and whether that follows language similarity.

From per-item summaries (:class:`~tl_multineuron.sharing.item_summaries.ItemSummaries`): for
every pair of languages, per layer and pooled over layers, the (item, neuron) pairs active in
both (``both``), in either (``either``) and their ratio, the Jaccard index, with an item-bootstrap
interval (Poisson weights per item id, as every streamed interval of the library). Co-activation
distance ``1 - jaccard`` is then set against typological distances
(:mod:`~tl_multineuron.sharing.typology`) by a Mantel permutation test
(:mod:`~tl_multineuron.sharing.mantel`): a positive correlation means languages further apart
share fewer neurons.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import MultiNeuronError
from .accumulator import poisson_weights
from .item_summaries import ItemSummaries
from .mantel import mantel_many
from .typology import DISTANCES, distance_matrix


def _both_either(items: ItemSummaries, t: int) -> tuple[Tensor, Tensor]:
    """Per item and layer: ``both`` ``[item, layer, lang, lang]`` and ``either``."""
    both = items.pairs[:, t].double()
    act = torch.diagonal(both, dim1=-2, dim2=-1)  # [item, layer, lang]
    either = act.unsqueeze(-1) + act.unsqueeze(-2) - both
    return both, either


def jaccard_matrix(
    items: ItemSummaries, threshold: float | None = None, layer: int | None = None
) -> Float[Tensor, "lang lang2"]:
    """Jaccard index of co-activation over all items, in one layer or pooled over layers
    (``layer=None``); the diagonal is 1 (0/0 cells are NaN)."""
    items.need_items()
    return _jaccards(items, items.threshold_index(threshold))[-1 if layer is None else layer]


def _jaccards(items: ItemSummaries, t: int) -> Float[Tensor, "layer_and_pooled lang lang2"]:
    """Jaccard matrices over all items at threshold index ``t``: one per layer, then the one
    pooled over layers (ratios of summed counts)."""
    both, either = _both_either(items, t)
    b, e = both.sum(0), either.sum(0)  # [layer, lang, lang]
    return torch.cat([b, b.sum(0, keepdim=True)]) / torch.cat([e, e.sum(0, keepdim=True)])


def pair_table(
    items: ItemSummaries,
    thresholds: Sequence[float] | None = None,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
) -> pd.DataFrame:
    """``language_pairs.csv``: per threshold, layer (``"all"`` pooled) and pair of languages
    (``lang_a`` before ``lang_b`` in the data's order): ``both``, ``either`` (counts of (item,
    neuron) pairs), ``jaccard`` and its item-bootstrap interval ``jaccard_low``/``_high``."""
    items.need_items()
    if not 0 < ci < 1:
        raise MultiNeuronError(f"ci {ci}: expected a level in (0, 1)")
    w = poisson_weights(items.item_ids, n_boot)  # [item, boot]
    ia, ib = torch.triu_indices(items.N, items.N, 1)
    names = np.array(items.languages, dtype=object)
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    parts = []
    for thr in thresholds if thresholds is not None else items.thresholds:
        both, either = _both_either(items, items.threshold_index(thr))
        both, either = both[..., ia, ib], either[..., ia, ib]  # [item, layer, pair]
        # layers, then the pooled row "all"
        b = torch.cat([both, both.sum(1, keepdim=True)], 1)
        e = torch.cat([either, either.sum(1, keepdim=True)], 1)
        jac = b.sum(0) / e.sum(0)  # [layer+1, pair]
        bb = torch.einsum("ib,ilp->blp", w, b)
        eb = torch.einsum("ib,ilp->blp", w, e)
        boot = bb / eb
        q = torch.nanquantile(boot, torch.tensor([lo_q, hi_q], dtype=boot.dtype), dim=0)
        L1, P = jac.shape
        layer = np.array([*range(items.n_layers), "all"], dtype=object)
        parts.append(
            pd.DataFrame(
                {
                    "threshold": items.thresholds[items.threshold_index(thr)],
                    "layer": np.repeat(layer, P),
                    "lang_a": np.tile(names[ia.numpy()], L1),
                    "lang_b": np.tile(names[ib.numpy()], L1),
                    "both": b.sum(0).reshape(-1).numpy().astype(np.int64),
                    "either": e.sum(0).reshape(-1).numpy().astype(np.int64),
                    "jaccard": jac.reshape(-1).numpy(),
                    "jaccard_low": q[0].reshape(-1).numpy(),
                    "jaccard_high": q[1].reshape(-1).numpy(),
                    "n_items": items.n_items,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def similarity_table(
    items: ItemSummaries,
    thresholds: Sequence[float] | None = None,
    distances: Sequence[str] = DISTANCES,
    *,
    n_perm: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """``language_similarity.csv``: per threshold, typological distance and layer (``"all"``
    pooled), the Mantel test of co-activation distance (1 - Jaccard) against that distance:
    ``statistic`` (Spearman correlation in [-1, 1]; positive: languages further apart share
    less), ``p_value`` (two-sided), ``n_languages`` (those the distance knows), the languages left
    out and the permutations used. Fewer than 3 languages with a distance: no row for it."""
    items.need_items()
    rows = []
    mats = {}
    for kind in distances if items.N >= 3 else ():  # a Mantel test needs 3 languages
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            mats[kind] = distance_matrix(kind, items.languages)
        for w in said:  # say each once, here, not once per layer and threshold
            warnings.warn(w.message, w.category, stacklevel=2)
    for thr in thresholds if thresholds is not None else items.thresholds:
        jacs = _jaccards(items, items.threshold_index(thr))  # layers, then pooled
        for kind, (dist, kept) in mats.items():
            if len(kept) < 3:
                continue
            idx = [items.languages.index(x) for x in kept]
            left_out = [x for x in items.languages if x not in kept]
            layers = [*range(items.n_layers), None]
            sub = jacs[:, idx][:, :, idx]  # [layer and pooled, kept, kept]
            # a language never active in a layer has no co-activation there: no row
            kept_layers = [(i, layer) for i, layer in enumerate(layers) if sub[i].isfinite().all()]
            results = mantel_many(
                [1.0 - sub[i].numpy() for i, _ in kept_layers],
                dist,
                n_perm=n_perm,
                seed=seed,
            )
            for (_, layer), res in zip(kept_layers, results, strict=True):
                rows.append(
                    {
                        "threshold": items.thresholds[items.threshold_index(thr)],
                        "distance": kind,
                        "layer": "all" if layer is None else layer,
                        "statistic": res.statistic,
                        "p_value": res.p_value,
                        "n_languages": res.n,
                        "languages_left_out": " ".join(left_out),
                        "n_permutations": res.n_permutations,
                        "exact": res.exact,
                        "method": "mantel-spearman",
                    }
                )
    cols = ["threshold", "distance", "layer", "statistic", "p_value", "n_languages"]
    return pd.DataFrame(
        rows, columns=[*cols, "languages_left_out", "n_permutations", "exact", "method"]
    )


def cluster_order(distance: np.ndarray) -> list[int]:
    """The leaf order of average-linkage clustering of a distance matrix (for heatmaps)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    d = np.asarray(distance, dtype=float)
    if d.shape[0] < 3:
        return list(range(d.shape[0]))
    d = np.nan_to_num((d + d.T) / 2, nan=1.0)
    np.fill_diagonal(d, 0.0)
    return leaves_list(linkage(squareform(d, checks=False), "average")).tolist()
