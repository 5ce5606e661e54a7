"""Data parallel on torch.distributed: real ``torchrun`` jobs of 2 gloo processes on this CPU
equal one process; a rank killed mid-run leaves no merged result and ``--resume`` finishes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import tiny_hf_dir, toy_dataset

from tl_multineuron.cli import main
from tl_multineuron.errors import MultiNeuronError
from tl_multineuron.experiments.scores import ExperimentScores
from tl_multineuron.runs.directories import load_item_categories
from tl_multineuron.runs.distributed import RankInfo, rank_device
from tl_multineuron.sharing.statistics import TENSOR_FIELDS, SharingStats

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    hf = tiny_hf_dir(root / "model")
    data = root / "d.jsonl"
    toy_dataset(40, ("en", "de", "fr")).to_jsonl(data)
    return hf, str(data), root


def _torchrun(nproc: int, *args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", "tl_multineuron", *args, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, **kw)


def _one(*args: str) -> None:
    """The same command in one plain process, with the ranks' one thread (BLAS rounding
    depends on the thread count, not on the process count)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tl_multineuron", *args, "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def _run(nproc: int, *args: str) -> tuple[int, str]:
    p = _torchrun(nproc, *args)
    out, _ = p.communicate(timeout=300)
    return p.returncode, out.decode()


def _assert_equal_stats(a: SharingStats, b: SharingStats) -> None:
    assert a.n_items == b.n_items
    for name in TENSOR_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name.startswith("act_"):  # float sums: 1e-12 relative (they are exact here)
            assert torch.allclose(x, y, rtol=1e-12, atol=0), name
        else:
            assert torch.equal(x, y), name


def test_two_gloo_ranks_equal_one_process(setup):
    """analyze under torchrun (2 ranks) == one process: integer counts exactly, float sums to
    1e-12 relative, per-item categories in item order; the job's run.json reads as one run."""
    hf, data, root = setup
    common = ["analyze", "--model", hf, "--data", data, "--limit", "9", "--batch-size", "1"]
    common += ["--threshold", "0,0.1", "--save-items", "--no-views"]
    _one(*common, "--out", str(root / "one"))
    rc, log = _run(2, *common, "--out", str(root / "two"))
    assert rc == 0, log
    assert "rank 1/2 on cpu (gloo)" in log and "2 ranks joined" in log
    _assert_equal_stats(
        SharingStats.load(root / "one" / "stats.pt"), SharingStats.load(root / "two" / "stats.pt")
    )
    ids1, codes1, spec1 = load_item_categories(root / "one")
    ids2, codes2, spec2 = load_item_categories(root / "two")
    assert ids1 == ids2 and torch.equal(codes1, codes2) and torch.equal(spec1, spec2)
    assert main(["report", str(root / "two")]) == 0


def test_two_ranks_attribute_and_intervene(setup):
    hf, data, root = setup
    common = ["--model", hf, "--data", data, "--batch-size", "1"]
    att = ["attribute", *common, "--limit", "6", "--k", "5", "--n-boot", "20"]
    _one(*att, "--out", str(root / "a1"))
    rc, log = _run(2, *att, "--out", str(root / "a2"))
    assert rc == 0, log
    from tl_multineuron.attribution.stats import AttributionStats

    a1 = AttributionStats.load(root / "a1" / "attribution.pt")
    assert a1.equals(AttributionStats.load(root / "a2" / "attribution.pt"))
    iv = ["intervene", *common, "--limit", "10", "--eval-items", "5", "--calibration", "5"]
    iv += ["--alphas", "2", "--seeds", "0,1", "--min-frequency", "0.5", "--allow-empty"]
    iv += ["--modes", "dynamic", "--no-matched"]
    _one(*iv, "--out", str(root / "i1"))
    rc, log = _run(2, *iv, "--out", str(root / "i2"))
    assert rc == 0, log
    s1 = ExperimentScores.load(root / "i1" / "scores.csv")
    assert s1.equals(ExperimentScores.load(root / "i2" / "scores.csv"))
    pd.testing.assert_frame_equal(
        pd.read_csv(root / "i1" / "comparisons.csv"), pd.read_csv(root / "i2" / "comparisons.csv")
    )


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun worker ``rank`` (a descendant of ``parent``)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            stat = (d / "stat").read_text().split()
        except OSError:
            continue
        worker = f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env)
        if worker and int(stat[3]) != 0 and _descends(int(d.name), parent):
            return int(d.name)
    return None


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().split()[3])
        except OSError:
            return False
    return False


def test_dead_rank_writes_no_merged_result_and_resume_finishes(setup):
    """SIGKILL rank 1 after its first checkpoint: the job fails, OUT holds no merged result,
    rank 1's shard holds what it had committed; --resume finishes it and equals one process."""
    hf, data, root = setup
    common = ["analyze", "--model", hf, "--data", data, "--batch-size", "1", "--no-views"]
    out = root / "killed"
    p = _torchrun(2, *common, "--out", str(out))
    ckpt = out / "ranks" / "rank-1-of-2" / "stats.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    pid = _rank_pid(p.pid, 1)
    assert pid is not None and ckpt.exists()
    os.kill(pid, signal.SIGKILL)
    log, _ = p.communicate(timeout=300)
    assert p.returncode != 0, log.decode()
    assert not (out / "stats.pt").exists() and not (out / "run.json").exists()
    done = SharingStats.load(ckpt).n_items
    assert 1 <= done < 20
    rc, log = _run(2, *common, "--out", str(out), "--resume")
    assert rc == 0, log
    assert f"resuming at item {done}" in log or "already done" in log
    _one(*common, "--out", str(root / "one40"))
    _assert_equal_stats(
        SharingStats.load(root / "one40" / "stats.pt"), SharingStats.load(out / "stats.pt")
    )


def test_bad_world_and_devices(setup):
    hf, data, root = setup
    rc, log = _run(
        2, "analyze", "--model", hf, "--data", data, "--limit", "1", "--out", str(root / "w")
    )
    assert rc != 0 and "2 ranks for 1 items" in log
    rc, log = _run(
        1,
        "analyze",
        "--model",
        hf,
        "--data",
        data,
        "--limit",
        "2",
        "--shard",
        "0/2",
        "--out",
        str(root / "w2"),
    )
    assert rc != 0 and "--shard and torchrun both split" in log
    with pytest.raises(MultiNeuronError, match="each rank takes cuda:LOCAL_RANK"):
        rank_device(RankInfo(0, 2, 0), "cuda:1")
    assert rank_device(RankInfo(1, 2, 1), "cpu") == "cpu"
    if not torch.cuda.is_available():
        assert rank_device(RankInfo(1, 2, 1), None) == "cpu"
        with pytest.raises(MultiNeuronError, match="CUDA is not usable"):
            rank_device(RankInfo(0, 2, 0), "cuda")
