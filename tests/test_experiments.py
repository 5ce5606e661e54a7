import pandas as pd
import pytest
import torch
from helpers import tiny_model, toy_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_multineuron import MultiNeuronError
from tl_multineuron.experiments.conditions import (
    Condition,
    ExperimentSets,
    accuracy_summary,
    paper_conditions,
    run_experiment,
)
from tl_multineuron.experiments.neuron_sets import magnitude_strata, sample_like
from tl_multineuron.runs.grid import GridConfig, run_task
from tl_multineuron.sharing.classification import Categories, Category


@pytest.fixture(scope="module")
def model():
    return tiny_model("gated", seed=2)


def test_paper_conditions():
    conds = paper_conditions(alphas=(1.5, 2), seeds=(0, 1), modes=("static",))
    names = [c.name for c in conds]
    assert names[0] == "none" and len(names) == len(set(names))
    assert "deactivate random (static, last) seed=1" in names
    assert "deactivate matched (static, last) seed=0" in names
    assert "amplify x1.5 all-shared (static, last)" in names
    assert "amplify x2 random (static, last) seed=1" in names
    # default grid: 1 + 2 modes x (shared, specific, 5 random, 5 matched, 4 amp, 20 amp-random)
    assert len(paper_conditions()) == 1 + 2 * (1 + 1 + 5 + 5 + 4 + 20)
    both = paper_conditions(scopes=("all",), include_bos=(False, True), seeds=(0,))
    assert {c.include_bos for c in both if c.target != "none"} == {False, True}
    assert Condition("random", "zero", seed=0).reference == Condition("all-shared", "zero")
    with pytest.raises(MultiNeuronError, match="seed"):
        Condition("random", "zero")
    with pytest.raises(MultiNeuronError):
        Condition("all-shared", "none")
    with pytest.raises(MultiNeuronError, match="include_bos"):
        Condition("all-shared", "zero", include_bos=True)  # scope last


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(8, 40),
    st.floats(0.0, 0.6),
    st.integers(0, 10**6),
    st.booleans(),
)
def test_controls_match_sizes_and_avoid_target(n_sets, L, D, p, seed, strata):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n_sets, L, D, generator=g) < p
    s = magnitude_strata(torch.rand(L, D, generator=g), 4) if strata else None
    if (target.sum(-1) > (~target).sum(-1)).any():  # more than half a layer: impossible
        with pytest.raises(MultiNeuronError, match="cannot draw"):
            sample_like(target, seed, strata=s)
        return
    ctrl = sample_like(target, seed, strata=s)
    assert torch.equal(ctrl.sum(-1), target.sum(-1))  # exact per-layer sizes, per set
    assert not (ctrl & target).any()  # drawn outside the target
    assert torch.equal(ctrl, sample_like(target, seed, strata=s))  # reproducible
    if s is not None:  # bins with enough candidates get exactly the target's count
        oh = torch.nn.functional.one_hot(s, 4).bool()
        want = (target[..., None] & oh).sum(-2)
        have = ((~target)[..., None] & oh).sum(-2)
        got = (ctrl[..., None] & oh).sum(-2)
        ok = (want <= have).all(-1)  # every bin of the layer could be matched
        assert torch.equal(got[ok], want[ok])


def test_control_refuses_a_layer_too_full():
    target = torch.ones(1, 2, 5, dtype=torch.bool)
    target[0, 1] = False
    with pytest.raises(MultiNeuronError, match="layer 0"):
        sample_like(target, 0)


def _sets(n_items=2, langs=("en", "de", "fr"), L=2, D=6):
    codes = torch.zeros(n_items, L, D, dtype=torch.long)
    codes[:, :, :2] = Category.ALL_SHARED
    codes[:, :, 2] = Category.SPECIFIC
    spec = torch.full((n_items, L, D), -1)
    spec[:, :, 2] = 1  # specific to 'de'
    cats = Categories(codes, spec, langs)
    return ExperimentSets(
        langs,
        cats.codes,
        cats.specific_lang,
        torch.zeros(L, D, dtype=torch.bool).index_fill_(1, torch.tensor([4]), True),
        torch.zeros(len(langs), L, D, dtype=torch.bool),
        magnitude_strata(torch.arange(L * D).float().view(L, D), 2),
    )


def test_sets_by_hand():
    s = _sets()
    m = s.masks(Condition("all-shared", "zero", mode="dynamic"))
    assert m.shape == (2, 3, 2, 6) and m[..., :2].all() and not m[..., 2:].any()
    m = s.masks(Condition("specific", "zero", mode="dynamic"))
    assert m[:, 1, :, 2].all() and m.sum() == 2 * 2  # only 'de' rows, neuron 2
    m = s.masks(Condition("all-shared", "zero"))  # static
    assert m[..., 4].all() and m.sum() == 2 * 3 * 2
    r = s.masks(Condition("random", "zero", mode="dynamic", seed=3))
    assert torch.equal(r.sum(-1), torch.full((2, 3, 2), 2)) and not r[..., :2].any()
    # one draw per item, the same for every language of the item
    assert torch.equal(r[:, 0], r[:, 1])
    assert not s.masks(Condition()).any()


def test_run_experiment_rows_sizes_and_summary(model):
    ds = toy_dataset(8, ("en", "de", "fr"))
    cal, ev = ds.slice(0, 5), ds.slice(5)
    conds = paper_conditions(alphas=(2.0,), scopes=("last", "all"), seeds=(0, 1))
    rows = run_experiment(model, ev, conds, cal, min_frequency=0.6, allow_empty=True)
    assert set(rows.condition) == {c.name for c in conds}
    assert len(rows) == len(conds) * 3 * 3
    assert rows.logprob.le(0).all() and rows.first_rank.ge(0).all()
    for mode in ("static", "dynamic"):
        tgt = rows[(rows.group == f"deactivate all-shared ({mode}, last)")].set_size.to_numpy()
        for ctl in ("random", "matched"):
            r = rows[rows.group == f"deactivate {ctl} ({mode}, last)"]
            for _, grp in r.groupby("seed"):
                assert (grp.set_size.to_numpy() == tgt).all() and (tgt > 0).all()
    summ = accuracy_summary(rows)
    r = summ[(summ.target == "random") & (summ.language == "all")]
    assert (r.n_seeds == 2).all() and (r.n == 9).all()
    with pytest.raises(MultiNeuronError, match="no scored rows"):
        accuracy_summary(pd.DataFrame())


def test_experiment_errors(model):
    ds = toy_dataset(4)
    with pytest.raises(MultiNeuronError, match="calibration split"):
        run_experiment(model, ds, [Condition("all-shared", "zero")])
    with pytest.raises(MultiNeuronError, match="overlap"):
        run_experiment(model, ds, [Condition("all-shared", "zero")], calibration=ds)
    with pytest.raises(MultiNeuronError, match="repeat"):
        run_experiment(model, ds, [Condition(), Condition()], calibration=ds.slice(0, 1))
    # a set empty for some rows: named, unless empty sets are allowed
    cal, ev = ds.slice(0, 2), ds.slice(2)
    with pytest.raises(MultiNeuronError, match=r"empty for item 'it\d'"):
        run_experiment(model, ev, [Condition("specific", "zero")], cal, specific_frequency=1.0)


def test_grid_task_on_tiny_model(model, tmp_path):
    ds = toy_dataset(9, ("en", "de", "fr"))
    cfg = GridConfig(
        tuple(paper_conditions(alphas=(2.0,), seeds=(0, 1))),
        eval_items=4,
        calibration=5,
        min_frequency=0.6,
        k=4,
        allow_empty=True,
    )
    comp = run_task(model, ds, tmp_path / "g", cfg, {"model": "tiny"})
    for f in ("stats.pt", "attribution.pt", "scores.csv", "summary.csv", "comparisons.csv"):
        assert (tmp_path / "g" / f).exists()
    import json

    boundary = json.loads((tmp_path / "g" / "answer_boundary.json").read_text())
    assert boundary == {"findings": []}  # the check ran on the unedited condition
    run = json.loads((tmp_path / "g" / "run-grid.json").read_text())
    assert run["answer_delimiter"] == "auto"
    assert run["answer_metrics"] == "vocabulary-blocked"  # which path the scorer's metrics took
    # a finding is shown in the report
    msg = "language 'de': on 3 of 4 rows ..."
    (tmp_path / "g" / "answer_boundary.json").write_text(
        json.dumps({"findings": [{"language": "de", "message": msg}]})
    )
    from tl_multineuron.report.page import build_report

    assert "Answer boundary: language &#x27;de&#x27;: on 3 of 4 rows" in (
        build_report(tmp_path / "g").read_text()
    )
    from tl_multineuron import AttributionStats, SharingStats

    assert SharingStats.load(tmp_path / "g" / "stats.pt").n_items == 9
    at = AttributionStats.load(tmp_path / "g" / "attribution.pt")
    enr = at["contribution"].enrichment(pooled=True)
    assert enr.shape == (4,)
    pairs = set(zip(comp.condition, comp.reference, strict=True))
    assert ("deactivate all-shared (static, last)", "deactivate random (static, last)") in pairs
    assert ("deactivate all-shared (dynamic, last)", "none") in pairs
    assert (comp.n_rows == 12).all() and set(comp.metric) == {"accuracy", "logprob"}
    with pytest.raises(MultiNeuronError, match="leaves no calibration"):
        run_task(model, ds.slice(0, 4), tmp_path / "h", cfg, {})


def test_every_category_is_deactivated_with_its_own_controls(model):
    s = _sets()
    codes = s.codes.clone()
    codes[:, :, 3] = Category.PARTIAL_SHARED  # neuron 3 partial-shared, 5 non-activated
    other = torch.zeros(2, 2, 6, dtype=torch.bool)
    other[0, :, 3], other[1, :, 5] = True, True  # static: partial n3, non-activated n5
    s = ExperimentSets(
        s.languages, codes, s.specific_lang, s.static_shared, s.static_specific, s.strata,
        static_other=other,
    )  # fmt: skip
    m = s.masks(Condition("partial-shared", "zero", mode="dynamic"))
    assert m[..., 3].all() and m.sum() == 2 * 3 * 2
    non = s.masks(Condition("non-activated", "zero", mode="dynamic"))  # n3 partial now: n4, n5
    assert non[..., 4:].all() and non.sum() == 2 * 3 * 2 * 2
    assert s.masks(Condition("non-activated", "zero"))[..., 5].all()  # static
    for mode in ("static", "dynamic"):
        target = s.masks(Condition("partial-shared", "zero", mode=mode))
        ctrl = s.masks(Condition("random", "zero", mode=mode, seed=1, of="partial-shared"))
        assert torch.equal(ctrl.sum(-1), target.sum(-1)) and not (ctrl & target).any()
    c = Condition("matched", "zero", seed=0, of="non-activated")
    assert c.group == "deactivate matched of non-activated (static, last)"
    assert c.reference == Condition("non-activated", "zero")
    with pytest.raises(MultiNeuronError, match="only random/matched controls take it"):
        Condition("all-shared", "zero", of="partial-shared")
    # scored and compared: each control is paired with the set it controls
    from tl_multineuron import paired_comparisons

    ds = toy_dataset(8, ("en", "de", "fr"))
    conds = paper_conditions(alphas=(), seeds=(0, 1), modes=("static",), other_categories=True)
    assert not any(
        c.target == "partial-shared"
        for c in paper_conditions(alphas=(), modes=("dynamic",), other_categories=True)
    )  # static only: no equal-size control lies outside a dynamic partial-shared set
    rows = run_experiment(
        model, ds.slice(5), conds, ds.slice(0, 5), allow_empty=True, min_frequency=0.6
    )
    pairs = set(zip(*paired_comparisons(rows)[["condition", "reference"]].values.T, strict=True))
    assert (
        "deactivate partial-shared (static, last)",
        "deactivate matched of partial-shared (static, last)",
    ) in pairs
