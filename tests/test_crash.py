"""Fault injection: real CLI processes SIGKILLed at random points, then resumed (with the same
or another batch size), give the results of an uninterrupted run."""

import random
import subprocess
import sys
import time

import pytest
import torch
from helpers import tiny_hf_dir, toy_dataset

from tl_multineuron import SharingStats
from tl_multineuron.runs import load_item_categories
from tl_multineuron.statistics import _TENSORS

N_ITEMS = 240
KILLS = 12


def _cli(*args):
    return [sys.executable, "-m", "tl_multineuron.cli", *args]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    hf = tiny_hf_dir(root / "model")
    data = root / "d.jsonl"
    toy_dataset(N_ITEMS, ("en", "de", "fr")).to_jsonl(data)
    return hf, str(data), root


def _analyze(hf, data, out, batch, every, *extra):
    return _cli(
        "analyze", "--model", hf, "--data", data, "--out", str(out), "--save-items",
        "--no-views", "--no-progress", "--threshold", "0,0.1",
        "--batch-size", str(batch), "--checkpoint-every", str(every), *extra,
    )  # fmt: skip


def assert_same_results(a_dir, b_dir, rtol=1e-12):
    a, b = SharingStats.load(a_dir / "stats.pt"), SharingStats.load(b_dir / "stats.pt")
    assert a.n_items == b.n_items == N_ITEMS
    for name in _TENSORS:
        x, y = getattr(a, name), getattr(b, name)
        if x.is_floating_point():
            scale = float(x.abs().max())
            torch.testing.assert_close(x, y, rtol=rtol, atol=rtol * scale, msg=name)
        else:
            assert torch.equal(x, y), name
    ids_a, codes_a, spec_a = load_item_categories(a_dir)
    ids_b, codes_b, spec_b = load_item_categories(b_dir)
    assert ids_b == ids_a == [f"it{i}" for i in range(N_ITEMS)]  # no duplicates, no gaps
    assert torch.equal(codes_a, codes_b) and torch.equal(spec_a, spec_b)


def test_sigkill_then_resume_equals_uninterrupted_run(setup):
    """Same batch size: everything identical (counts bitwise, float sums to 1e-12). Another
    batch size: counts and per-item categories bitwise; the float64 activation sums then agree
    to the float32 rounding of a forward pass over a differently shaped batch, which is also all
    two uninterrupted runs at those batch sizes agree to (asserted below: ~1e-6)."""
    hf, data, root = setup
    ref, total = {}, 0.0
    for b in (2, 4, 8):
        ref[b] = root / f"ref{b}"
        t0 = time.perf_counter()
        subprocess.run(_analyze(hf, data, ref[b], b, 3), check=True, capture_output=True)
        total = max(total, time.perf_counter() - t0)
    assert_same_results(ref[4], ref[8], rtol=1e-4)  # uninterrupted runs, two batch sizes
    rng = random.Random(0)
    killed_with_results = 0
    for k in range(KILLS):
        out = root / f"kill{k}"
        b1 = rng.choice([2, 4, 8])
        b2 = b1 if k % 2 == 0 else rng.choice([x for x in (2, 4, 8) if x != b1])
        p = subprocess.Popen(
            _analyze(hf, data, out, b1, rng.choice([1, 3])),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.0) * total)  # anywhere from start-up to the last batch
        p.kill()
        p.wait()
        killed_with_results += (out / "stats.pt").exists()
        r = subprocess.run(
            _analyze(hf, data, out, b2, rng.choice([1, 3]), "--resume"),
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert_same_results(ref[b1], out, rtol=1e-12 if b1 == b2 else 1e-4)
    assert killed_with_results >= KILLS // 3  # the kills did land inside the batch loop
