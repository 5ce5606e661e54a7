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
from tl_multineuron.runs.directories import load_item_categories
from tl_multineuron.sharing.statistics import TENSOR_FIELDS

N_ITEMS = 240
KILLS = 12

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]


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


def _timed(cmd, out, run_file="run.json"):
    """Run to completion; returns (seconds until the run file appears, seconds after it)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / run_file).exists() and p.poll() is None:
        time.sleep(0.01)
    t1 = time.perf_counter()
    assert p.wait() == 0
    return t1 - t0, time.perf_counter() - t1


def _kill(cmd, out, run_file, loop, k, rng):
    """SIGKILL at a random point: for even k inside the work loop (after the run file is
    written), for odd k anywhere from start-up on."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if k % 2 == 0:
        while not (out / run_file).exists() and p.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0) * loop)
    else:
        time.sleep(rng.uniform(0.0, 1.0) * (loop + 3.0))
    p.kill()
    p.wait()
    return time.perf_counter() - t0


def assert_same_results(a_dir, b_dir, rtol=1e-12):
    a, b = SharingStats.load(a_dir / "stats.pt"), SharingStats.load(b_dir / "stats.pt")
    assert a.n_items == b.n_items == N_ITEMS
    for name in TENSOR_FIELDS:
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
    ref, loop = {}, 0.0
    for b in (2, 4, 8):
        ref[b] = root / f"ref{b}"
        loop = max(loop, _timed(_analyze(hf, data, ref[b], b, 3), ref[b])[1])
    assert_same_results(ref[4], ref[8], rtol=1e-4)  # uninterrupted runs, two batch sizes
    rng = random.Random(0)
    killed_with_results = 0
    for k in range(KILLS):
        out = root / f"kill{k}"
        b1 = rng.choice([2, 4, 8])
        b2 = b1 if k % 2 == 0 else rng.choice([x for x in (2, 4, 8) if x != b1])
        _kill(_analyze(hf, data, out, b1, rng.choice([1, 3])), out, "run.json", loop, k, rng)
        killed_with_results += (out / "stats.pt").exists()
        r = subprocess.run(
            _analyze(hf, data, out, b2, rng.choice([1, 3]), "--resume"),
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert_same_results(ref[b1], out, rtol=1e-12 if b1 == b2 else 1e-4)
    assert killed_with_results >= 2  # kills did land after the first checkpoint


def _attribute(hf, data, out, batch, *extra):
    return _cli(
        "attribute", "--model", hf, "--data", data, "--out", str(out), "--no-progress",
        "--method", "contribution,effective", "--k", "5", "--batch-size", str(batch), *extra,
    )  # fmt: skip


def _intervene(hf, data, out, *extra):
    return _cli(
        "intervene", "--model", hf, "--data", data, "--out", str(out), "--no-progress",
        "--eval-items", "40", "--calibration", "40", "--alphas", "2", "--seeds", "0,1,2,3",
        "--min-frequency", "0.5", "--allow-empty", "--score-batch", "8", *extra,
    )  # fmt: skip


def test_attribute_and_intervene_survive_sigkill(setup):
    """4 kill points each on attribute and intervene (20 with analyze's 12)."""
    from tl_multineuron.attribution.stats import AttributionStats

    hf, data, root = setup
    rng = random.Random(1)
    jobs = {
        "attribute": lambda out, *x: _attribute(hf, data, out, 4, *x),
        "intervene": lambda out, *x: _intervene(hf, data, out, *x),
    }
    for kind, cmd in jobs.items():
        ref = root / f"ref-{kind}"
        run_file = f"run-{kind}.json"
        loop = _timed(cmd(ref), ref, run_file)[1]
        landed = 0
        for k in range(4):
            out = root / f"kill-{kind}{k}"
            _kill(cmd(out), out, run_file, loop, k, rng)
            partial = out / ("attribution.pt" if kind == "attribute" else "sets.pt")
            landed += partial.exists()
            r = subprocess.run(cmd(out, "--resume"), capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
            if kind == "attribute":
                a = AttributionStats.load(ref / "attribution.pt")
                b = AttributionStats.load(out / "attribution.pt")
                assert a.n_items == b.n_items == N_ITEMS
                for m in a.methods:
                    sa, sb = a[m], b[m]
                    assert torch.equal(sa.topk_counts, sb.topk_counts)
                    assert torch.equal(sa.count, sb.count)
                    assert torch.equal(sa.mass, sb.mass) and torch.equal(sa.abs_mass, sb.abs_mass)
            else:
                import pandas as pd

                key = ["condition", "item_id", "language"]
                a = pd.read_csv(ref / "scores.csv").sort_values(key).reset_index(drop=True)
                b = pd.read_csv(out / "scores.csv").sort_values(key).reset_index(drop=True)
                assert len(b) == len(a) and not b.duplicated(key).any()
                pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
                for f in ("summary.csv", "comparisons.csv"):
                    pd.testing.assert_frame_equal(
                        pd.read_csv(ref / f), pd.read_csv(out / f), check_exact=False, rtol=1e-9
                    )
        assert landed >= 1, f"no kill of {kind} landed after its first results"
