"""`tl-multineuron specificity` end to end on a tiny model: run files, resume after an
interruption without rescoring finished parts, the report section, bad input named."""

import json

import pandas as pd
import pytest
from helpers import tiny_hf_dir

from tl_multineuron.cli import main
from tl_multineuron.runs import specificity as spec_module

SMALL = ["--task", "facts", "--eval-items", "4", "--calibration", "8", "--seeds", "0",
         "--top-rate", "0.05", "--min-frequency", "0.25", "--shared-frequency", "0.25",
         "--max-new-tokens", "2",
         "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return tiny_hf_dir(tmp_path_factory.mktemp("spec") / "model", n_inner=64, n_positions=1024)


def test_specificity_runs_resumes_and_reports(hf, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["specificity", "--model", hf, "--out", str(out), *SMALL]
    real = spec_module.deactivation_matrix
    calls = []

    def stop_at_third(*a, **k):
        calls.append(k.get("baseline"))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(spec_module, "deactivation_matrix", stop_at_third)
    assert main(args) == 130
    d = out / "specificity"
    done = pd.read_csv(d / "matrix_rows.csv")
    assert list(dict.fromkeys(done["method"])) == ["none", "sharing-matters"]
    calls.clear()
    monkeypatch.setattr(spec_module, "deactivation_matrix", lambda *a, **k: calls.append(k) or
                        real(*a, **k))  # fmt: skip
    assert main([*args, "--resume"]) == 0
    assert len(calls) == 4 and not any(k["baseline"] for k in calls)  # 3 methods + all-shared
    rows = pd.read_csv(d / "matrix_rows.csv")
    assert rows.groupby(["method", "set_language", "control", "seed"]).size().eq(4 * 8).all()
    sizes = pd.read_csv(d / "sets.csv").pivot_table(
        index="language", columns="method", values="size", aggfunc="sum"
    )
    # per language, every method that found neurons has as many as the others
    assert sizes.apply(lambda r: r[r > 0].nunique() <= 1, axis=1).all()
    assert (sizes > 0).any().any()
    matrix = pd.read_csv(d / "matrix.csv")
    assert {"sharing-matters", "lape", "act-prob-90p", "magnitude", "all-shared"} >= set(
        matrix["method"]
    )
    sel = pd.read_csv(d / "selectivity.csv")
    assert set(sel["control"]) == {"set", "random", "matched", "set - random", "set - matched"}
    ident = pd.read_csv(d / "identifier.csv")
    assert len(ident) == 8 and (out / "specificity" / "output_language.csv").exists()
    run = json.loads((d / "run-specificity.json").read_text())
    assert run["identity"]["specificity"]["methods"] == [
        "sharing-matters", "lape", "act-prob-90p", "magnitude"
    ]  # fmt: skip
    assert "selectivity" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Language specificity" in page and "Selectivity" in page


def test_specificity_bad_input_is_named(hf, tmp_path, capsys):
    base = ["specificity", "--model", hf, "--out", str(tmp_path / "x"), *SMALL]
    assert main([*base, "--methods", "lape,entropy"]) == 2
    assert "specificity methods ['entropy']" in capsys.readouterr().err
    assert main([*base, "--top-rate", "2"]) == 2
    assert "top_rate 2.0; expected a number in (0, 1]" in capsys.readouterr().err
