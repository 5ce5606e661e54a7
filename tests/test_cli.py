import json

import pandas as pd
import pytest
import torch
from helpers import tiny_hf_dir, toy_dataset

from tl_multineuron import SharingStats
from tl_multineuron.cli import main
from tl_multineuron.sharing.statistics import SharingStats as _S


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    hf = tiny_hf_dir(root / "model")
    data = root / "toy.jsonl"
    toy_dataset(6, ("en", "de", "fr", "ja")).to_jsonl(data)
    return hf, str(data), root


def _args(hf, data, out, *extra):
    return [
        "analyze",
        "--model",
        hf,
        "--data",
        data,
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--no-progress",
        *extra,
    ]


def test_analyze_writes_results(setup, capsys):
    hf, data, root = setup
    out = root / "run1"
    assert main(_args(hf, data, out, "--threshold", "0,0.1", "--save-items")) == 0
    printed = capsys.readouterr().out
    assert "all-shared" in printed and "site blocks.{layer}.mlp.hook_post" in printed
    stats = SharingStats.load(out / "stats.pt")
    assert stats.n_items == 6 and stats.thresholds == (0.0, 0.1)
    run = json.loads((out / "run.json").read_text())
    assert run["identity"]["analysis"]["thresholds"] == [0.0, 0.1]
    assert (out / "layer_fractions.csv").exists() and (out / "stability.csv").exists()
    from tl_multineuron.runs.directories import load_item_categories

    ids, codes, _ = load_item_categories(out)
    assert ids == [f"it{i}" for i in range(6)] and codes.shape == (6, 2, 48)
    # same directory, same config, no --resume: refuse rather than overwrite
    assert main(_args(hf, data, out, "--threshold", "0,0.1", "--save-items")) == 2
    assert "already holds results" in capsys.readouterr().err
    # different configuration: refuse and say what differs
    assert main(_args(hf, data, out, "--threshold", "0.5")) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "thresholds" in err


def test_resume_after_interruption_equals_one_run(setup, monkeypatch):
    hf, data, root = setup
    full = root / "full"
    assert main(_args(hf, data, full)) == 0
    calls = {"n": 0}
    orig = _S.update

    def flaky(self, acts, item_ids=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return orig(self, acts, item_ids)

    part = root / "part"
    monkeypatch.setattr(_S, "update", flaky)
    assert main(_args(hf, data, part)) == 130
    monkeypatch.setattr(_S, "update", orig)
    assert SharingStats.load(part / "stats.pt").n_items == 4  # two batches were saved
    assert main(_args(hf, data, part, "--resume")) == 0
    a, b = SharingStats.load(full / "stats.pt"), SharingStats.load(part / "stats.pt")
    assert a.n_items == b.n_items == 6
    assert torch.equal(a.category_counts, b.category_counts)
    torch.testing.assert_close(a.act_sum, b.act_sum)
    assert a.items.item_ids == [f"it{i}" for i in range(6)] and a.items.equals(b.items)


def test_bad_cli_input(setup, capsys):
    hf, data, root = setup
    assert main(_args(hf, data, root / "x", "--threshold", "0,0")) == 2
    assert "repeats" in capsys.readouterr().err
    assert main(_args(hf, data, root / "y", "--languages", "en")) == 2
    assert "at least 2 languages" in capsys.readouterr().err
    assert main(_args(hf, data, root / "z", "--hook", "mlp.nope")) == 2
    assert "no hook named" in capsys.readouterr().err
    assert main(["analyze", "--model", hf, "--out", str(root / "w")]) == 2
    assert "exactly one of --task" in capsys.readouterr().err


def test_tasks_command(capsys):
    assert main(["tasks"]) == 0
    assert "translate_en_xx" in capsys.readouterr().out


def test_attribute_cli_and_resume(setup, capsys, monkeypatch):
    from tl_multineuron.attribution.stats import AttributionStats, ScoreStats

    hf, data, root = setup
    out = root / "attr"
    args = [
        "attribute",
        "--model",
        hf,
        "--data",
        data,
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--no-progress",
        "--method",
        "contribution,effective,ig",
        "--k",
        "5",
        "--steps",
        "4",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "IG completeness" in printed and "top-5" in printed
    full = AttributionStats.load(out / "attribution.pt")
    assert full.n_items == 6 and (out / "attribution.csv").exists()
    # interrupted after two batches, then resumed: equals the uninterrupted run
    calls = {"n": 0}
    orig = ScoreStats.update

    def flaky(self, scores, codes, item_ids=None):
        if self.method == "contribution":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return orig(self, scores, codes, item_ids)

    part = root / "attr_part"
    monkeypatch.setattr(ScoreStats, "update", flaky)
    assert main([*args[:6], str(part), *args[7:]]) == 130
    monkeypatch.setattr(ScoreStats, "update", orig)
    assert AttributionStats.load(part / "attribution.pt").n_items == 4
    assert main([*args[:6], str(part), *args[7:], "--resume"]) == 0
    back = AttributionStats.load(part / "attribution.pt")
    for m in full.methods:
        assert torch.equal(back[m].topk_counts, full[m].topk_counts)
    # analyze and attribute results live side by side in one directory
    assert main(_args(hf, data, out)) == 0
    capsys.readouterr()
    assert main([*args, "--k", "7"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_intervene_cli_resume(setup, capsys, monkeypatch):
    hf, data, root = setup
    out = root / "iv"
    args = [
        "intervene",
        "--model",
        hf,
        "--data",
        data,
        "--out",
        str(out),
        "--no-progress",
        "--eval-items",
        "3",
        "--calibration",
        "3",
        "--alphas",
        "2",
        "--seeds",
        "0,1",
        "--min-frequency",
        "0.5",
        "--allow-empty",
    ]
    assert main(args) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert {"none", "all-shared", "random", "matched", "specific"} <= set(scores.target)
    assert len(scores) == scores.condition.nunique() * 3 * 4  # conditions x items x langs
    comp = pd.read_csv(out / "comparisons.csv")
    assert {"delta", "ci_low", "ci_high", "p_value", "n_rows"} <= set(comp.columns)
    assert (comp.n_rows == 12).all()
    # resume: finished conditions are neither recomputed nor duplicated
    from tl_multineuron.experiments import conditions as experiments

    def boom(*a, **k):
        raise AssertionError("a finished condition was recomputed")

    monkeypatch.setattr(experiments, "score_answers", boom)
    assert main([*args, "--resume"]) == 0
    assert len(pd.read_csv(out / "scores.csv")) == len(scores)
    # another grid in the same directory is refused, naming the setting
    assert main([*args[:-2], "0.7", "--allow-empty", "--resume"]) == 2
    assert "min_frequency" in capsys.readouterr().err
    # bad input: one seed, a calibration split that leaves no items
    assert main([*args[:-7], "--seeds", "0", "--out", str(root / "iv2")]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    bad = [*args[:9], "6", *args[10:]]
    bad[bad.index("--out") + 1] = str(root / "iv3")
    assert main(bad) == 2
    assert "leaves no calibration items" in capsys.readouterr().err


@pytest.mark.subprocess
def test_help_lists_every_command_without_importing_torch():
    import subprocess
    import sys

    from tl_multineuron.cli import COMMANDS

    code = (
        "import sys\nfrom tl_multineuron.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert f"    {name} " in out.stdout, name


def test_cli_defaults_come_from_the_config_dataclasses():
    """One source of defaults: each option that configures a library step defaults to that
    step's config dataclass field."""
    from dataclasses import fields

    from tl_multineuron.attribution.analysis import AttributionConfig
    from tl_multineuron.cli import build_parser
    from tl_multineuron.experiments.evaluation import EvalConfig
    from tl_multineuron.runs.grid import GridConfig
    from tl_multineuron.runs.language import LanguageSteerConfig
    from tl_multineuron.runs.steer import AccuracySteerConfig
    from tl_multineuron.sharing.analysis import AnalysisConfig

    def d(cls):
        return {f.name: f.default for f in fields(cls)}

    p = build_parser()
    g = vars(p.parse_args(["grid", "--out", "x"]))
    for k in ("eval_items", "calibration", "min_frequency", "specific_frequency", "score_batch"):
        assert g[k] == d(GridConfig)[k], k
    assert (g["hook"], g["batch_size"]) == (d(GridConfig)["hook"], d(GridConfig)["batch_size"])
    i = vars(p.parse_args(["intervene", "--task", "facts", "--out", "x"]))
    assert (i["eval_items"], i["calibration"]) == (48, 64) == (g["eval_items"], g["calibration"])
    st = vars(p.parse_args(["steer", "--task", "facts", "--out", "x"]))
    acc, lang = d(AccuracySteerConfig), d(LanguageSteerConfig)
    for k in ("eval_items", "calibration", "search_items", "min_frequency", "specific_frequency"):
        assert st[k] == acc[k], k
    assert (st["max_english_drop"], st["english"], st["score_batch"]) == (
        acc["max_english_drop"],
        acc["english"],
        acc["score_batch"],
    )
    assert tuple(float(x) for x in st["alphas"].split(",")) == acc["alphas"]
    assert tuple(float(x) for x in st["betas"].split(",")) == acc["betas"]
    assert tuple(int(x) for x in st["seeds"].split(",")) == acc["seeds"]
    assert st["source"] == lang["source"] and st["lang_eval_items"] == lang["eval_items"]
    assert tuple(st["methods"].split(",")) == lang["methods"]
    assert tuple(float(x) for x in st["strengths"].split(",")) == lang["strengths"]
    a = vars(p.parse_args(["analyze", "--task", "facts", "--out", "x"]))
    assert a["batch_size"] == d(AnalysisConfig)["batch_size"] and float(a["threshold"]) == 0.0
    b = vars(p.parse_args(["attribute", "--task", "facts", "--out", "x"]))
    att = d(AttributionConfig)
    assert tuple(b["method"].split(",")) == att["methods"] and float(b["k"]) == att["k"]
    assert (b["n_boot"], b["kn_fraction"], b["kn_share"]) == (
        att["n_boot"],
        att["kn_fraction"],
        att["kn_share"],
    )
    e = vars(p.parse_args(["evaluate", "--task", "facts", "--out", "x"]))
    assert (
        (e["max_new_tokens"], e["batch_size"])
        == (8, 16)
        == tuple(d(EvalConfig)[k] for k in ("max_new_tokens", "batch_size"))
    )
