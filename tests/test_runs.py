"""Result directories: one writer at a time, --overwrite leaves nothing stale, the report
never mixes runs of different models or data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_hf_dir, toy_dataset

from tl_multineuron import MultiNeuronError
from tl_multineuron.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    hf = tiny_hf_dir(root / "model")
    data = root / "d.jsonl"
    toy_dataset(3, ("en", "de", "fr")).to_jsonl(data)
    other = root / "other.jsonl"
    toy_dataset(4, ("en", "de", "fr")).to_jsonl(other)
    return hf, str(data), str(other)


# -- one writer per directory ----------------------------------------------------------------
def _hold_lock(directory):
    code = (
        "import sys, time; from tl_multineuron.runs.locks import DirectoryLock; "
        "DirectoryLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.mark.subprocess
def test_second_process_refused_then_stale_lock_taken_over(tmp_path):
    from tl_multineuron.runs.directories import RunDir
    from tl_multineuron.runs.locks import LOCK_FILE, DirectoryLock

    holder = _hold_lock(tmp_path / "out")
    try:
        with pytest.raises(MultiNeuronError, match=rf"in use by process {holder.pid} on this host"):
            RunDir(tmp_path / "out", {"x": 1})
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind
        holder.wait()
    assert (tmp_path / "out" / LOCK_FILE).exists()
    run = RunDir(tmp_path / "out", {"x": 1})  # its process is gone: stale, taken over
    assert json.loads((tmp_path / "out" / LOCK_FILE).read_text())["pid"] == os.getpid()
    run.close()
    assert not (tmp_path / "out" / LOCK_FILE).exists()
    with DirectoryLock(tmp_path / "out"), DirectoryLock(tmp_path / "out"):
        pass  # re-entrant within one process


def test_cli_refuses_a_directory_in_use(setup, tmp_path, capsys):
    hf, data, _ = setup
    holder = _hold_lock(tmp_path / "out")
    try:
        args = ["analyze", "--model", hf, "--data", data, "--out", str(tmp_path / "out")]
        assert main([*args, "--no-progress"]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
        assert not (tmp_path / "out" / "stats.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main([*args, "--no-progress", "--no-views"]) == 0


def _analyze(hf, data, out, *extra):
    return main(
        ["analyze", "--model", hf, "--data", data, "--out", str(out), "--no-progress", *extra]
    )


def test_overwrite_removes_every_stale_file(setup, tmp_path):
    hf, data, _ = setup
    out = tmp_path / "run"
    assert _analyze(hf, data, out, "--save-items") == 0
    assert main(["report", str(out)]) == 0
    for f in ("views.json", "report.html", "layer_fractions.csv", "items"):
        assert (out / f).exists(), f
    (out / "views.json").write_text('{"stale": true}')
    # a different configuration with --overwrite: nothing of the old one survives
    assert _analyze(hf, data, out, "--threshold", "0.5", "--no-views", "--overwrite") == 0
    assert not (out / "views.json").exists() and not (out / "report.html").exists()
    assert not (out / "items").exists()
    assert (out / "stats.pt").exists()


def test_runs_of_other_data_refused_in_one_directory_and_report(setup, tmp_path, capsys):
    hf, data, other = setup
    out = tmp_path / "run"
    assert _analyze(hf, data, out, "--no-views") == 0
    args = ["attribute", "--model", hf, "--data", other, "--out", str(out), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "another model or dataset" in err and "dataset_fingerprint" in err
    # a hand-edited neighbour: the report names the field and the files, and refuses
    ident = json.loads((out / "run.json").read_text())
    ident["identity"]["dataset_fingerprint"] = "0" * 16
    (out / "run-attribute.json").write_text(json.dumps(ident))
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mixes runs" in err and "run-attribute.json" in err and "run.json" in err
    (out / "run-attribute.json").unlink()
    assert main(["report", str(out)]) == 0
    assert "Built from:" in (out / "report.html").read_text()


def test_run_files_and_reports_name_no_machine_path(tmp_path, monkeypatch):
    """An absolute results directory is recorded by its name in the run file's command and in
    the report header; a relative one as given; other arguments unchanged."""
    from tl_multineuron.report.page import build_report
    from tl_multineuron.runs.directories import RunDir

    out = tmp_path / "results" / "myrun"
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/tl-multineuron", "analyze", "--out",
                                      str(out), "--model", "/models/m.gguf"])  # fmt: skip
    run = RunDir(out, {"x": 1})
    run.write_run({})
    run.close()
    (rec,) = [json.loads(f.read_text()) for f in out.glob("run*.json")]
    assert rec["command"] == "tl-multineuron analyze --out myrun --model /models/m.gguf"
    assert str(tmp_path) not in build_report(out).read_text()
    monkeypatch.chdir(tmp_path)
    assert "results/myrun &middot;" in build_report(Path("results/myrun")).read_text()
