"""Shards tile the items; merges refuse repeats, gaps and foreign splits."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_multineuron.errors import MultiNeuronError
from tl_multineuron.runs.shards import Shard, check_cover


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 64))
def test_ranges_tile_the_items_in_order(n_items, count):
    if count > n_items:
        with pytest.raises(MultiNeuronError, match="some shards would be empty"):
            Shard(0, count).item_range(n_items)
        return
    ranges = [Shard(k, count).item_range(n_items) for k in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n_items
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [b - a for a, b in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    recs = [Shard(k, count).to_dict(n_items) for k in reversed(range(count))]
    assert [r["index"] for r in check_cover(recs, n_items)] == list(range(count))


def test_parse_and_refusals():
    assert Shard.parse(" 3/8 ") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(MultiNeuronError):
            Shard.parse(bad)
    recs = [Shard(k, 4).to_dict(10) for k in range(4)]
    with pytest.raises(MultiNeuronError, match=r"\['2/4'\] are missing"):
        check_cover(recs[:2] + recs[3:], 10)
    with pytest.raises(MultiNeuronError, match=r"\['1/4'\] given more than once"):
        check_cover([*recs, recs[1]], 10)
    with pytest.raises(MultiNeuronError, match="different counts"):
        check_cover([*recs, Shard(0, 3).to_dict(10)], 10)
    with pytest.raises(MultiNeuronError, match="gives"):
        check_cover(recs, 12)


def test_cli_shards_merge_equal_one_run(tmp_path):
    """analyze --shard K/3 three times, then merge: the statistics equal one run over all
    items (counts and sums to the bit), and report reads the merged directory; merges of a
    missing, repeated or foreign shard are refused."""
    import torch
    from helpers import tiny_hf_dir, toy_dataset

    from tl_multineuron.cli import main
    from tl_multineuron.sharing.statistics import TENSOR_FIELDS, SharingStats

    model = tiny_hf_dir(tmp_path / "m")
    data = tmp_path / "d.jsonl"
    toy_dataset(7, ("en", "de", "fr")).to_jsonl(data)
    common = ["analyze", "--model", model, "--data", str(data), "--no-progress", "--no-views"]
    common += ["--batch-size", "2", "--threshold", "0,0.1"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    shards = []
    for k in range(3):
        shards.append(str(tmp_path / f"s{k}"))
        assert main([*common, "--shard", f"{k}/3", "--out", shards[-1]]) == 0
    assert main(["merge", *reversed(shards), "--out", str(tmp_path / "merged")]) == 0
    one = SharingStats.load(tmp_path / "one" / "stats.pt")
    merged = SharingStats.load(tmp_path / "merged" / "stats.pt")
    assert merged.n_items == one.n_items == 7
    for name in TENSOR_FIELDS:  # integer counts and grid-rounded sums: to the bit
        assert torch.equal(getattr(one, name), getattr(merged, name)), name
    assert main(["report", str(tmp_path / "merged")]) == 0
    assert main(["merge", shards[0], shards[2], "--out", str(tmp_path / "x")]) == 2
    assert main(["merge", *shards, shards[1], "--out", str(tmp_path / "y")]) == 2
    other = str(tmp_path / "t")
    assert main([*common[:-2], "--threshold", "0", "--shard", "1/3", "--out", other]) == 0
    assert main(["merge", shards[0], other, shards[2], "--out", str(tmp_path / "z")]) == 2


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9),
    st.data(),
    st.integers(0, 50),
    st.booleans(),
)
def test_sampled_controls_of_a_shard_are_the_family_rows(n, data, seed, stratified):
    """Dynamic random controls of items ``a..b`` drawn with ``skip``/``total`` equal rows
    ``a..b`` of the draw over all items (also where strata run short of candidates)."""
    import torch

    from tl_multineuron.experiments.neuron_sets import sample_like

    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a + 1, n))
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, 3, 16, generator=g) < 0.4) & (torch.arange(16) % 2 == 0)
    strata = torch.randint(0, 4, (3, 16), generator=g) if stratified else None
    full = sample_like(target, seed, strata=strata)
    part = sample_like(target[a:b], seed, strata=strata, skip=a, total=n)
    assert torch.equal(part, full[a:b])
    with pytest.raises(MultiNeuronError, match="do not lie within"):
        sample_like(target[a:b], seed, skip=a, total=b - 1)


@pytest.fixture(scope="module")
def tiny():
    from helpers import tiny_model, toy_dataset

    return tiny_model("gated", n_layers=3, d_mlp=20), toy_dataset(11, ("en", "de", "fr", "ja"))


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_random_shard_splits_merge_to_one_run(tiny, data):
    """Property: any split into K/N shards, analysed separately and merged in any order,
    equals one run to the bit. (One item per pass: a batch's padding may move activations by
    float rounding, which is the model's, not the merge's.)"""
    import torch

    from tl_multineuron.sharing.analysis import AnalysisConfig, analyze
    from tl_multineuron.sharing.statistics import TENSOR_FIELDS, merge_all

    model, ds = tiny
    count = data.draw(st.integers(1, len(ds)))
    cfg = AnalysisConfig(thresholds=(0.0, 0.05), batch_size=1)
    one = analyze(model, ds, cfg).stats
    parts = []
    for k in range(count):
        a, b = Shard(k, count).item_range(len(ds))
        parts.append(analyze(model, ds.slice(a, b), cfg).stats)
    order = data.draw(st.permutations(range(count)))
    merged = merge_all([parts[i] for i in order])
    assert merged.n_items == one.n_items
    for name in TENSOR_FIELDS:
        assert torch.equal(getattr(merged, name), getattr(one, name)), name


def _tiny_cli(tmp_path, n_items=9):
    from helpers import tiny_hf_dir, toy_dataset

    model = tiny_hf_dir(tmp_path / "m")
    data = tmp_path / "d.jsonl"
    toy_dataset(n_items, ("en", "de", "fr")).to_jsonl(data)
    return ["--model", model, "--data", str(data), "--no-progress"]


def test_cli_attribute_shards_merge_equal_one_run(tmp_path):
    from tl_multineuron.attribution.stats import AttributionStats
    from tl_multineuron.cli import main

    common = ["attribute", *_tiny_cli(tmp_path), "--batch-size", "2", "--k", "5"]
    common += ["--method", "contribution,effective,ig", "--n-boot", "20", "--steps", "4"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    shards = [str(tmp_path / f"s{k}") for k in range(4)]
    for k, d in enumerate(shards):
        assert main([*common, "--shard", f"{k}/4", "--out", d]) == 0
    assert main(["merge", *shards[::-1], "--out", str(tmp_path / "merged")]) == 0
    one = AttributionStats.load(tmp_path / "one" / "attribution.pt")
    merged = AttributionStats.load(tmp_path / "merged" / "attribution.pt")
    assert merged.n_items == 9 and merged.equals(one)
    import pandas as pd

    for f in ("attribution.csv", "enrichment.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "one" / f), pd.read_csv(tmp_path / "merged" / f)
        )
    assert main(["report", str(tmp_path / "merged")]) == 0
    # a shard of another k is refused, naming the setting
    other = str(tmp_path / "k7")
    assert main([*common[:-1], "7", "--shard", "1/4", "--out", other]) == 0
    assert main(["merge", shards[0], other, *shards[2:], "--out", str(tmp_path / "x")]) == 2


def test_cli_intervene_shards_merge_equal_one_run(tmp_path, capsys):
    """Shards of the evaluated items, calibrated on the same items: the merged scores equal
    one run row for row, dynamic random and matched controls included."""
    import pandas as pd

    from tl_multineuron.cli import main
    from tl_multineuron.experiments.scores import ExperimentScores

    common = ["intervene", *_tiny_cli(tmp_path, 12), "--eval-items", "7", "--calibration", "5"]
    common += ["--alphas", "2", "--seeds", "0,1", "--min-frequency", "0.5", "--allow-empty"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    shards = [str(tmp_path / f"s{k}") for k in range(3)]
    for k, d in enumerate(shards):
        assert main([*common, "--shard", f"{k}/3", "--out", d]) == 0
    assert main(["merge", *shards, "--out", str(tmp_path / "merged")]) == 0
    one = ExperimentScores.load(tmp_path / "one" / "scores.csv")
    merged = ExperimentScores.load(tmp_path / "merged" / "scores.csv")
    assert set(one.rows["mode"]) == {"static", "dynamic"}
    # shards score their rows in blocks of other shapes (fewer rows, prefix groups of fewer
    # items): float rounding may differ (one token's log-prob by 1 ulp seen), the rest exact
    assert len(merged.rows) == len(one.rows) and merged.equals(one, rtol=1e-5)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "one" / "comparisons.csv"),
        pd.read_csv(tmp_path / "merged" / "comparisons.csv"),
        atol=1e-6,  # deltas of near-equal log-probs: the rounding above, absolute
    )
    assert main(["report", str(tmp_path / "merged")]) == 0
    capsys.readouterr()
    # more shards than evaluated items; a missing shard; an unfinished shard
    assert main([*common, "--shard", "0/8", "--out", str(tmp_path / "bad")]) == 2
    assert "some shards would be empty" in capsys.readouterr().err
    assert main(["merge", *shards[:2], "--out", str(tmp_path / "x")]) == 2
    assert "['2/3'] are missing" in capsys.readouterr().err
    s = ExperimentScores.load(tmp_path / "s1" / "scores.csv")
    s.rows = s.rows[s.rows["condition"] != s.rows["condition"].iloc[-1]]
    s.save(tmp_path / "s1" / "scores.csv")
    assert main(["merge", *shards, "--out", str(tmp_path / "y")]) == 2
    assert "has not scored 1 condition" in capsys.readouterr().err
