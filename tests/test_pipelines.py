"""The library resumes by itself: run_analysis / run_attribution without the CLI."""

import pytest
from helpers import tiny_model, toy_dataset

import tl_multineuron as tlm
from tl_multineuron.runs.directories import RunDir
from tl_multineuron.runs.pipelines import run_analysis, run_attribution


def test_run_analysis_resumes_after_an_interruption_and_equals_one_run(tmp_path, monkeypatch):
    model = tiny_model("gated", seed=1)
    ds = toy_dataset(6, ("en", "de", "fr"))
    cfg = tlm.AnalysisConfig(batch_size=2)
    ident = {"what": "test", "fingerprint": ds.fingerprint()}
    whole = run_analysis(model, ds, tmp_path / "whole", cfg, ident, views=False)
    assert whole.n_items == 6 and (tmp_path / "whole" / "stats.pt").exists()

    real, calls = RunDir.checkpoint, []

    def killed_after_first(self, stats):
        real(self, stats)
        calls.append(stats.n_items)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "checkpoint", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_analysis(model, ds, tmp_path / "cut", cfg, ident, views=False)
    assert calls == [2]
    monkeypatch.setattr(RunDir, "checkpoint", real)
    loads = []

    def loader():
        loads.append(1)
        return model

    again = run_analysis(loader, ds, tmp_path / "cut", cfg, ident, resume=True, views=False)
    assert again.equals(whole) and loads == [1]
    # everything done: the model is not loaded again
    run_analysis(loader, ds, tmp_path / "cut", cfg, ident, resume=True, views=False)
    assert loads == [1]
    with pytest.raises(tlm.MultiNeuronError, match="checkpoint_every"):
        run_analysis(model, ds, tmp_path / "x", cfg, ident, checkpoint_every=0)


def test_run_attribution_resumes_and_writes_its_tables(tmp_path):
    model = tiny_model("gated", seed=2)
    ds = toy_dataset(4, ("en", "de"))
    cfg = tlm.AttributionConfig(methods=("contribution",), k=3, batch_size=2)
    ident = {"what": "attr"}
    first = run_attribution(model, ds, tmp_path / "a", cfg, ident)
    assert (tmp_path / "a" / "attribution.csv").exists() and first.n_items == 4
    again = run_attribution(
        lambda: pytest.fail("loaded"), ds, tmp_path / "a", cfg, ident, resume=True
    )
    assert again.n_items == 4
