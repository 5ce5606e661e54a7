"""A results directory written before the package was split into subpackages (commit 20df6e4:
``grid --quick`` and ``analyze --save-items`` on a tiny model, ``tests/fixtures/run_20df6e4``)
is read after it, and what the old code wrote from it is what the new code computes."""

import shutil
from pathlib import Path

import pandas as pd
import torch

from tl_multineuron import (
    AttributionStats,
    ExperimentScores,
    SharingStats,
    build_report,
    load_item_categories,
    paired_comparisons,
)

RUN = Path(__file__).parent / "fixtures" / "run_20df6e4"


def test_sharing_statistics_and_item_categories_read_back_and_agree():
    stats = SharingStats.load(RUN / "analyze" / "stats.pt")
    assert stats.n_items == 4 and len(stats.languages) == 8
    old = pd.read_csv(RUN / "analyze" / "layer_fractions.csv")
    new = stats.to_frame()
    pd.testing.assert_frame_equal(new.reset_index(drop=True), old, check_dtype=False)
    ids, codes, spec = load_item_categories(RUN / "analyze")
    assert len(ids) == 4 and codes.shape[0] == 4 and spec.shape == codes.shape
    # the per-item categories recount to the stored statistics' category counts
    recount = torch.nn.functional.one_hot(codes.long(), 4).sum(0).permute(2, 0, 1)
    assert torch.equal(recount, stats.category_counts[0].long())


def test_grid_results_read_back_and_comparisons_recompute_identically():
    d = RUN / "facts"
    scores = ExperimentScores.load(d / "scores.csv").rows
    old = pd.read_csv(d / "comparisons.csv")
    new = paired_comparisons(scores)
    cols = ["condition", "reference", "metric", "delta", "ci_low", "ci_high", "p_value"]
    pd.testing.assert_frame_equal(
        new[cols].reset_index(drop=True), old[cols].reset_index(drop=True), check_dtype=False
    )
    attr = AttributionStats.load(d / "attribution.pt")
    old_attr = pd.read_csv(d / "attribution.csv")
    pd.testing.assert_frame_equal(
        attr.to_frame().reset_index(drop=True), old_attr, check_dtype=False
    )
    sets = torch.load(d / "sets.pt", weights_only=True)
    assert sets


def test_the_report_builds_from_the_old_directory(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    page = build_report(run).read_text()
    assert "facts" in page and "deactivate all-shared" in page
