"""Shards tile the items; merges refuse repeats, gaps and foreign splits."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_multineuron.errors import MultiNeuronError
from tl_multineuron.shards import Shard, check_cover


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
    from tl_multineuron.statistics import _TENSORS, SharingStats

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
    for name in _TENSORS:  # integer counts and grid-rounded sums: to the bit
        assert torch.equal(getattr(one, name), getattr(merged, name)), name
    assert main(["report", str(tmp_path / "merged")]) == 0
    assert main(["merge", shards[0], shards[2], "--out", str(tmp_path / "x")]) == 2
    assert main(["merge", *shards, shards[1], "--out", str(tmp_path / "y")]) == 2
    other = str(tmp_path / "t")
    assert main([*common[:-2], "--threshold", "0", "--shard", "1/3", "--out", other]) == 0
    assert main(["merge", shards[0], other, shards[2], "--out", str(tmp_path / "z")]) == 2
