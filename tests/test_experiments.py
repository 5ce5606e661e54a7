import pandas as pd
import pytest
from helpers import tiny_model, toy_dataset

from tl_multineuron import MultiNeuronError
from tl_multineuron.evaluation import EvalConfig
from tl_multineuron.experiments import (
    Condition,
    accuracy_summary,
    paper_conditions,
    run_experiment,
)


@pytest.fixture(scope="module")
def model():
    return tiny_model("gated", seed=2)


def test_paper_conditions():
    conds = paper_conditions(alphas=(1.5, 2), scopes=("last",), seeds=(0, 1), modes=("static",))
    names = [c.name for c in conds]
    assert names[0] == "none" and len(names) == len(set(names))
    assert "deactivate random (static, last) seed=1" in names
    assert "amplify x1.5 all-shared (static, last)" in names
    with pytest.raises(MultiNeuronError):
        Condition("random", "zero")  # no seed
    with pytest.raises(MultiNeuronError):
        Condition("all-shared", "none")


def test_run_experiment_controls_and_scopes(model):
    ds = toy_dataset(8, ("en", "de", "fr"))
    cal, ev = ds.slice(0, 5), ds.slice(5)
    conds = paper_conditions(alphas=(2.0,), scopes=("last", "all"), seeds=(0, 1))
    gens = run_experiment(
        model,
        ev,
        conds,
        cal,
        min_frequency=0.6,
        eval_config=EvalConfig(max_new_tokens=3, batch_size=4),
    )
    assert set(gens.condition) == {c.name for c in conds}
    assert len(gens) == len(conds) * 3 * 3
    # random controls intervene on exactly as many neurons as their target, row by row
    for mode in ("static", "dynamic"):
        tgt = gens[
            (gens.target == "all-shared")
            & (gens.op == "zero")
            & (gens["mode"] == mode)
            & (gens.scope == "last")
        ].set_size.to_numpy()
        rnd = gens[
            (gens.target == "random")
            & (gens["mode"] == mode)
            & (gens.scope == "last")
            & (gens.seed == 0)
        ].set_size.to_numpy()
        assert (tgt == rnd).all() and (tgt > 0).all()
    summ = accuracy_summary(gens)
    r = summ[(summ.target == "random") & (summ.language == "all")]
    assert (r.n_seeds == 2).all() and {"last", "all"} == set(r.scope)
    assert {"prefix_match_acc", "first_token_match_acc", "prefix_match_ci95"} <= set(summ)


def test_experiment_errors(model):
    ds = toy_dataset(4)
    with pytest.raises(MultiNeuronError, match="calibration split"):
        run_experiment(model, ds, [Condition("all-shared", "zero")])
    with pytest.raises(MultiNeuronError, match="overlap"):
        run_experiment(model, ds, [Condition("all-shared", "zero")], calibration=ds)
    with pytest.raises(MultiNeuronError, match="no generations"):
        accuracy_summary(pd.DataFrame())
