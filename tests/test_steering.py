"""Steering: band restriction at hook level, calibration / evaluation separation, the language
identifier, the difference-of-means vector, the CLI and its bad-input errors."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_hf_dir, tiny_model, toy_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_multineuron import MultiNeuronError
from tl_multineuron.cli import main
from tl_multineuron.data.splits import calibration_split, check_disjoint
from tl_multineuron.runs import steer as steer_runs
from tl_multineuron.steering.identifier import LanguageIdentifier, identifier_accuracy
from tl_multineuron.steering.language import (
    ResidualAdd,
    control_table,
    diff_of_means,
    harmonic_mean,
    language_edit,
)
from tl_multineuron.steering.sets import (
    SteerConfig,
    SteeringSets,
    check_band,
    default_bands,
    parse_band,
    search_space,
)
from tl_multineuron.steering.study import choose

L, D = 3, 24
FIXTURE = HealthCheck.function_scoped_fixture


@pytest.fixture(scope="module")
def model():
    return tiny_model("gated", seed=2, n_layers=L, d_mlp=D)


def _sets(seed: int = 0, d: int = D) -> SteeringSets:
    g = torch.Generator().manual_seed(seed)
    shared = torch.rand(L, d, generator=g) < 0.3
    spec = (torch.rand(2, L, d, generator=g) < 0.1) & ~shared
    spec[1] &= ~spec[0]
    mean = torch.rand(2, L, d, generator=g)
    return SteeringSets(("en", "de"), shared, spec, mean)


def _capture(model, prompts, hooks):
    """mlp.hook_post of every layer as the model sees it after ``hooks`` edited it."""
    seen = {}

    def grab(name):
        def hook(act, hook):
            seen[name] = act.detach().clone()

        return hook

    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(L)]
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks) + [(n, grab(n)) for n in names]):
        model(prompts)
    return [seen[n] for n in names]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.integers(0, L - 1),
    width=st.integers(1, L),
    kind=st.sampled_from(["scale", "mu"]),
    seed=st.integers(0, 50),
)
def test_band_touches_only_its_layers(model, start, width, kind, seed):
    band = (start, min(L, start + width))
    sets = _sets(seed)
    cfg = SteerConfig(kind, band, alpha=2.0, beta=0.5, strength=0.7)
    langs = torch.tensor([0, 1])
    iv = sets.intervention(cfg, langs)
    hooks = iv.fwd_hooks(model)
    assert {h.layer for _, h in hooks} <= set(range(*band))
    prompts = ["dog cat sun 1", "Hund Katze 2"]
    clean = _capture(model, prompts, [])
    steered = _capture(model, prompts, hooks)
    for layer in range(band[0]):  # before the band: untouched
        assert torch.equal(steered[layer], clean[layer])
    # the first band layer sees clean inputs: the edit is exactly the hand computation at the
    # last position, on the band's neurons only
    s = band[0]
    shared, spec = sets.shared[s], sets.specific[langs, s]
    mask = shared | spec
    if kind == "scale":
        factor = torch.where(shared, 2.0, torch.where(spec, 0.5, 1.0))
        want_last = clean[s][:, -1] * factor
    else:
        mu = sets.mean.mean(0)[s]
        want_last = torch.where(
            mask, clean[s][:, -1] + 0.7 * (mu - clean[s][:, -1]), clean[s][:, -1]
        )
    torch.testing.assert_close(steered[s][:, -1], want_last)
    torch.testing.assert_close(steered[s][:, :-1], clean[s][:, :-1])


def test_random_control_same_sizes_outside_sets():
    sets = _sets(3, d=200)
    shared, spec = sets.band_sets((1, 3))
    r_shared, r_spec = sets.band_sets((1, 3), control_seed=4)
    assert torch.equal(r_shared.sum(-1), shared.sum(-1))
    assert torch.equal(r_spec.sum(-1), spec.sum(-1))
    taken = sets.shared | sets.specific.any(0)
    assert not (r_shared & taken).any() and not (r_spec & taken).any()
    assert not (r_spec & r_shared).any()
    assert not r_shared[0].any() and not r_spec[:, 0].any()  # outside the band: nothing


def test_bands_and_configs():
    assert default_bands(18) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 18)]
    assert default_bands(2, 6) == [(0, 1), (1, 2)]
    assert parse_band("12-18") == (12, 18) == parse_band("12:18")
    configs = search_space(18, bands=[(12, 18)], alphas=(1.5,), betas=(1.0, 0.5))
    assert [c.name for c in configs] == [
        "alpha=1.5 beta=1 @ L12-17",
        "alpha=1.5 beta=0.5 @ L12-17",
        "mu x0.5 @ L12-17",
    ]
    assert SteerConfig.from_dict(configs[1].to_dict()) == configs[1]
    with pytest.raises(MultiNeuronError, match=r"outside the model's 18 layers"):
        search_space(18, bands=[(12, 19)])
    with pytest.raises(MultiNeuronError, match="outside"):
        check_band((-1, 2), 18)
    with pytest.raises(MultiNeuronError, match="START-STOP"):
        parse_band("12")


def test_choose_respects_the_english_allowance():
    surface = pd.DataFrame(
        {
            "config": ["a", "b", "c"],
            "d_logprob_non_en": [0.5, 0.3, 0.1],
            "d_accuracy_en": [-2.0, -0.5, 0.0],
        }
    )
    assert choose(surface, 1.0) == "b"
    assert choose(surface, 3.0) == "a"
    with pytest.raises(MultiNeuronError, match="costs English"):
        choose(surface.iloc[:1], 1.0)


@pytest.fixture(scope="module")
def wide_model():
    return tiny_model("gated", seed=2, n_layers=L, d_mlp=128)


def _spy_study(model, out, monkeypatch, n_items, eval_items, calibration, search) -> bool:
    """Run the accuracy study, recording every pass's items; check that calibration work
    (statistics, search) never touches an evaluated item and that only the chosen
    configuration is evaluated, after the search. Returns whether evaluation ran."""
    ds = toy_dataset(n_items, ("en", "de"))
    calls = []
    real_score, real_analyze = steer_runs.score_steering, steer_runs.analyze

    def spy_score(m, part, sets, configs, **kw):
        calls.append(("score", [it.item_id for it in part.items], [c.name for c, s in configs]))
        return real_score(m, part, sets, configs, **kw)

    def spy_analyze(m, part, *a, **kw):
        calls.append(("analyze", [it.item_id for it in part.items], []))
        return real_analyze(m, part, *a, **kw)

    monkeypatch.setattr(steer_runs, "score_steering", spy_score)
    monkeypatch.setattr(steer_runs, "analyze", spy_analyze)
    cfg = steer_runs.AccuracySteerConfig(
        eval_items=eval_items, calibration=max(calibration, search), search_items=search,
        bands=((1, 3),), alphas=(2.0,), betas=(1.0, 0.5), mu_strengths=(0.5,), seeds=(0,),
        min_frequency=0.5, specific_frequency=0.5, max_english_drop=100.0,
    )  # fmt: skip
    ids = [it.item_id for it in ds.items]
    evaluated = set(ids[n_items - eval_items :])
    try:
        steer_runs.run_accuracy_study(model, ds, out, cfg, {"model": "tiny"})
    except MultiNeuronError as e:  # e.g. no neuron all-shared in the calibration split
        assert any(x in str(e) for x in ("empty", "cannot draw"))
    seen_eval = False
    for what, items, names in calls:
        if set(items) & evaluated:
            assert what == "score" and set(items) == evaluated
            assert len({n.split(" random")[0] for n in names} - {"none"}) == 1  # the chosen
            seen_eval = True
        else:
            assert not seen_eval, "calibration work after the evaluation started"
            assert set(items) <= set(ids[: n_items - eval_items])
    return seen_eval


@settings(max_examples=8, deadline=None, suppress_health_check=[FIXTURE])
@given(
    n_items=st.integers(4, 10),
    eval_items=st.integers(1, 3),
    calibration=st.integers(1, 7),
    search=st.integers(1, 7),
)
def test_calibration_never_sees_evaluation_items(
    wide_model, tmp_path_factory, monkeypatch, n_items, eval_items, calibration, search
):
    _spy_study(
        wide_model, tmp_path_factory.mktemp("st"), monkeypatch, n_items, eval_items,
        calibration, search,
    )  # fmt: skip


def test_calibration_separation_reaches_the_evaluation(wide_model, tmp_path, monkeypatch):
    assert _spy_study(wide_model, tmp_path, monkeypatch, 9, 3, 6, 3)


def test_overlapping_splits_are_refused():
    ds = toy_dataset(6)
    with pytest.raises(MultiNeuronError, match=r"overlaps the evaluated split: item\(s\) \['it2'"):
        check_disjoint(ds.slice(0, 3), ds.slice(2))
    items = list(toy_dataset(4).items)
    dup = type(items[0])("other", items[3].prompts, items[3].answers, "toy")
    cal = type(ds)((items[0], dup), ds.languages, "toy")
    with pytest.raises(MultiNeuronError, match="has the prompt of a calibration item"):
        check_disjoint(cal, ds.slice(3, 4))
    with pytest.raises(MultiNeuronError, match="leaves no calibration items"):
        calibration_split(ds, 6, 3)


def test_language_identifier_on_fixed_strings():
    ident = LanguageIdentifier(["en", "de", "fr", "es", "ru", "zh", "ja", "ar"])
    texts = [
        "The weather is nice today",
        "Das Wetter ist heute schön",
        "Il fait beau aujourd'hui",
        "Hace buen tiempo hoy",
        "Сегодня хорошая погода",
        "今天天气很好",
        "今日はいい天気です",
        "الطقس جميل اليوم",
        "12345",
        "",
    ]
    assert ident.detect(texts) == ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", None, None]
    acc = identifier_accuracy(ident, {"ru": ["Москва", "Париж"], "en": ["Moscow", "Дом"]})
    assert acc.set_index("language")["accuracy"].to_dict() == {"ru": 100.0, "en": 50.0}
    with pytest.raises(MultiNeuronError, match=r"\['xx'\] are not supported"):
        LanguageIdentifier(["en", "xx"])
    with pytest.raises(MultiNeuronError, match="at least 2"):
        LanguageIdentifier(["en"])


def test_diff_of_means_by_hand(model):
    tgt, src = ["Hund Katze 1", "Sonne 22"], ["dog cat 1", "sun 2", "the sun 3"]

    def last(prompt):
        _, cache = model.run_with_cache(prompt, names_filter="blocks.1.hook_resid_post")
        return cache["blocks.1.hook_resid_post"][0, -1]

    want = torch.stack([last(p) for p in tgt]).mean(0) - torch.stack([last(p) for p in src]).mean(0)
    got = diff_of_means(model, tgt, src, layer=1, batch_size=2)  # padded batches
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the steering vector adds strength x v to the residual at every position
    add = ResidualAdd(1, got, 2.0)
    ((name, hook),) = add.fwd_hooks(model)
    x = torch.zeros(1, 3, got.shape[0])
    torch.testing.assert_close(hook(x, None), (2.0 * got).expand(1, 3, -1))
    with pytest.raises(MultiNeuronError, match="layers 0..2"):
        diff_of_means(model, tgt, src, layer=3)


def test_language_edits_and_errors():
    sets = _sets(1)
    sets.specific[1].zero_()
    with pytest.raises(MultiNeuronError, match="target language 'de' has no specific neurons"):
        language_edit("lape", 1.0, "en", "de", sets)
    with pytest.raises(MultiNeuronError, match="source language 'de' has no specific"):
        language_edit("deactivate", 1.0, "de", "en", sets)
    iv = language_edit("lape", 2.0, "de", "en", sets)
    torch.testing.assert_close(iv.value, 2.0 * sets.mean[0])
    assert torch.equal(iv.neurons.mask, sets.specific[0]) and iv.positions == "all"
    with pytest.raises(MultiNeuronError, match="method 'nope'"):
        language_edit("nope", 1.0, "en", "de", sets)


def test_control_table_harmonic_mean():
    assert harmonic_mean(np.array([0.5, 0, 1]), np.array([1.0, 0, 0])).tolist() == [2 / 3, 0, 0]
    rows = pd.DataFrame(
        {
            "target": "de",
            "method": ["none"] * 4 + ["lape"] * 4,
            "strength": [0.0] * 4 + [1.0] * 4,
            "item_id": ["a", "b", "c", "d"] * 2,
            "in_target": [0, 0, 1, 0, 1, 1, 1, 0],
            "relevant": [1, 1, 1, 0, 1, 0, 1, 1],
        }
    )
    t = control_table(rows, n_boot=200).set_index("method")
    assert t.loc["lape", "language_control"] == 75.0 and t.loc["lape", "relevance"] == 75.0
    assert t.loc["lape", "harmonic_mean"] == pytest.approx(75.0)
    assert t.loc["none", "harmonic_mean"] == pytest.approx(100 * 2 * 0.25 * 0.75 / 1.0)
    assert t.loc["lape", "harmonic_mean_low"] <= 75.0 <= t.loc["lape", "harmonic_mean_high"]


def test_steer_cli_both_studies_and_resume(tmp_path, monkeypatch, capsys):
    hf = tiny_hf_dir(tmp_path / "model", n_inner=256)
    data = tmp_path / "toy.jsonl"
    toy_dataset(9, ("en", "de", "fr")).to_jsonl(data)
    out = tmp_path / "st"
    args = [
        "steer", "--model", hf, "--data", str(data), "--out", str(out), "--no-progress",
        "--study", "both", "--eval-items", "3", "--calibration", "6", "--search-items", "3",
        "--bands", "0-1,1-2", "--alphas", "2", "--betas", "1,0.5", "--seeds", "0,1",
        "--min-frequency", "0.9", "--specific-frequency", "0.3", "--max-english-drop", "100",
        "--strengths", "1,2", "--lang-eval-items", "3", "--max-new-tokens", "2",
    ]  # fmt: skip
    assert main(args) == 0
    acc = out / "accuracy"
    search = pd.read_csv(acc / "search.csv")
    assert len(search) == 2 * 3  # bands x (2 scale settings + mu)
    held = pd.read_csv(acc / "heldout.csv")
    assert {"none", "random"} == set(held.reference)
    assert set(held.language) == {"en", "de", "fr", "non-English", "all"}
    assert (held[held.language == "all"].n_rows == 9).all()
    lang = pd.read_csv(out / "language" / "language_control.csv")
    assert set(lang.target) == {"de", "fr"}
    assert {"none", "deactivate", "lape", "lape+deactivate", "diff-means"} == set(lang.method)
    # resume recomputes nothing
    from tl_multineuron.runs import language as language_runs

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(steer_runs, "score_steering", boom)
    monkeypatch.setattr(language_runs, "generate_greedy", boom)
    assert main([*args, "--resume"]) == 0
    from tl_multineuron.report.page import build_report

    html = build_report(out).read_text()
    assert "Accuracy steering" in html and "Output-language control" in html
    # bad input: named
    capsys.readouterr()
    assert main([*args[:-26], "--bands", "0-9", "--out", str(tmp_path / "b")]) == 2
    assert "outside the model's 2 layers" in capsys.readouterr().err
    bad_target = [*args, "--study", "language", "--targets", "ja", "--out", str(tmp_path / "c")]
    assert main(bad_target) == 2
    assert "target language(s) ['ja']" in capsys.readouterr().err


def test_steer_min_frequency_reaches_both_studies(tmp_path, monkeypatch):
    """Regression: ``steer --min-frequency`` once reached only the accuracy study; the
    language study always calibrated its sets at 0.9."""
    from tl_multineuron.runs import language as language_runs

    hf = tiny_hf_dir(tmp_path / "model", n_inner=64)
    data = tmp_path / "toy.jsonl"
    toy_dataset(9, ("en", "de", "fr")).to_jsonl(data)
    seen = {}

    def capture(name):
        def run(model, ds, out, cfg, *a, **k):
            seen[name] = cfg.min_frequency
            raise KeyboardInterrupt  # stop before any work

        return run

    monkeypatch.setattr(steer_runs, "run_accuracy_study", capture("accuracy"))
    monkeypatch.setattr(language_runs, "run_language_study", capture("language"))
    for study in ("accuracy", "language"):
        args = [
            "steer", "--model", hf, "--data", str(data), "--out", str(tmp_path / study),
            "--no-progress", "--study", study, "--eval-items", "3", "--calibration", "6",
            "--search-items", "3", "--lang-eval-items", "3", "--min-frequency", "0.65",
        ]  # fmt: skip
        assert main(args) != 0  # the interruption, after the study was called
    assert seen == {"accuracy": 0.65, "language": 0.65}
