"""The main job's command, `tl-multineuron grid`, end to end on a tiny model (fast tier)."""

import json

import pandas as pd
import pytest
from helpers import tiny_hf_dir

from tl_multineuron.cli import main
from tl_multineuron.runs import grid as grid_module

SMALL = [
    "--eval-items",
    "4",
    "--calibration",
    "6",
    "--seeds",
    "0,1",
    "--allow-empty",
    "--no-progress",
]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return tiny_hf_dir(tmp_path_factory.mktemp("grid") / "model", n_inner=64, n_positions=1024)


def test_grid_quick_writes_every_result_and_the_report(hf, tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["grid", "--quick", "--model", hf, "--out", str(out), *SMALL]) == 0
    assert json.loads((out / "grid.json").read_text())["tasks"] == ["facts"]
    d = out / "facts"
    for f in ("stats.pt", "attribution.pt", "scores.csv", "summary.csv", "comparisons.csv"):
        assert (d / f).exists(), f
    scores = pd.read_csv(d / "scores.csv")
    assert scores.groupby("condition").size().eq(4 * 8).all()  # 4 items x 8 languages
    assert set(scores["mode"]) <= {"static", "-"} and "deactivate all-shared (static, last)" in set(
        scores.condition
    )
    assert json.loads((d / "answer_boundary.json").read_text()) == {"findings": []}
    assert "facts" in (out / "report.html").read_text()
    assert "grid done" in capsys.readouterr().out


def test_grid_resumes_after_an_interruption_between_tasks(hf, tmp_path, monkeypatch, capsys):
    out = tmp_path / "two"
    args = ["grid", "--quick", "--tasks", "facts,translate_xx_en", "--model", hf]
    args = [a for a in args if a != "--quick"] + ["--modes", "static", "--alphas", "2"]
    args += ["--no-matched", "--no-amplify-controls", "--out", str(out), *SMALL]
    real = grid_module.run_task
    seen = []

    def stop_at_second(model, ds, *a, **k):
        seen.append(ds.name)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(model, ds, *a, **k)

    monkeypatch.setattr(grid_module, "run_task", stop_at_second)
    assert main(args) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    first = (out / "facts" / "scores.csv").stat().st_mtime_ns
    assert not (out / "translate_xx_en" / "scores.csv").exists()
    monkeypatch.setattr(grid_module, "run_task", real)
    calls = []
    from tl_multineuron.experiments import conditions as experiments

    scorer = experiments.score_answers

    def counting(model, rows, *a, **k):
        calls.append(rows.labels[0])
        return scorer(model, rows, *a, **k)

    monkeypatch.setattr(experiments, "score_answers", counting)
    assert main([*args, "--resume"]) == 0
    assert (out / "facts" / "scores.csv").stat().st_mtime_ns == first  # not recomputed
    import tl_multineuron as tlm

    facts_ids = {repr(it.item_id) for it in tlm.load_task("facts").items}
    assert calls and not [c for c in calls if c.split(",")[0].removeprefix("item ") in facts_ids]
    assert json.loads((out / "grid.json").read_text())["tasks"] == ["facts", "translate_xx_en"]
    assert (out / "translate_xx_en" / "comparisons.csv").exists()


def test_grid_bad_input_is_named(hf, tmp_path, capsys):
    assert main(["grid", "--tasks", "facts,nope", "--model", hf, "--out", str(tmp_path)]) == 2
    assert "unknown task(s) ['nope']" in capsys.readouterr().err
    out = tmp_path / "size"
    assert main(["grid", "--quick", "--model", hf, "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    # the same directory, another grid size: refused, naming what differs
    other = ["grid", "--quick", "--model", hf, "--out", str(out), "--resume", *SMALL]
    other[other.index("--eval-items") + 1] = "5"
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "eval_items" in err


def test_steer_min_frequency_reaches_the_language_study(hf, tmp_path, monkeypatch):
    """Regression: `steer --min-frequency` used to reach only the accuracy study; the language
    study always took 0.9."""
    from tl_multineuron.runs import language as language_runs

    seen = {}

    def capture(model, ds, out, cfg, identity, **kw):
        seen["cfg"] = cfg
        return pd.DataFrame()

    monkeypatch.setattr(language_runs, "run_language_study", capture)
    args = ["steer", "--study", "language", "--task", "facts", "--model", hf]
    args += ["--min-frequency", "0.7", "--specific-frequency", "0.4", "--out", str(tmp_path)]
    assert main(args) == 0
    assert (seen["cfg"].min_frequency, seen["cfg"].specific_frequency) == (0.7, 0.4)


def test_grid_sizes_main_full_and_quick(hf, tmp_path, capsys):
    """The main job runs the paper's central comparisons (25 conditions); --full is the
    95-condition grid (every category deactivated); --quick with --full is refused."""
    from tl_multineuron.cli import build_parser
    from tl_multineuron.cli.grid import size_grid
    from tl_multineuron.cli.options import grid_config

    def conditions(*flags):
        args = build_parser().parse_args(["grid", "--out", str(tmp_path), *flags])
        size_grid(args)
        return grid_config(args, analysis=True).conditions

    main_job = conditions()
    groups = {c.group for c in main_job}
    assert len(main_job) == 25 and {c.mode for c in main_job} == {"static"}
    assert {
        "none",
        "deactivate all-shared (static, last)",
        "deactivate specific (static, last)",
        "deactivate random (static, last)",
        "deactivate matched (static, last)",
        "amplify x1.5 all-shared (static, last)",
        "amplify x1.5 random (static, last)",
        "amplify x2 all-shared (static, last)",
        "amplify x2 random (static, last)",
    } == groups
    assert sum(c.target == "random" and c.op == "zero" for c in main_job) == 5
    assert len(conditions("--full")) == 95
    # per mode: all-shared, specific, their 10 controls, x2 + 5; static: 2 other x (1 + 10)
    assert len(conditions("--full", "--alphas", "2")) == 1 + 2 * (2 + 5 + 5 + 6) + 2 * 11
    full = {c.group for c in conditions("--full")}
    assert "deactivate matched of non-activated (static, last)" in full
    assert "deactivate partial-shared (dynamic, last)" not in full
    assert len(conditions("--all-categories")) == 25 + 22
    assert main(["grid", "--quick", "--full", "--model", hf, "--out", str(tmp_path)]) == 2
    assert "--quick and --full" in capsys.readouterr().err
