"""One protocol for every accumulator: SharingStats, AttributionStats, ExperimentScores."""

import pandas as pd
import pytest
import torch
from helpers import seeded_acts

from tl_multineuron import AttributionStats, MultiNeuronError, ScoreStats, SharingStats
from tl_multineuron.experiments.scores import ExperimentScores
from tl_multineuron.sharing.accumulator import Accumulator

LANGS = ("en", "de", "fr")


def _meta(shard):
    return {"model": "m", "weights_fingerprint": "w" * 16, "dataset": "toy",
            "dataset_fingerprint": f"shard{shard}"}  # fmt: skip


def _sharing(shard, n=4):
    s = SharingStats(LANGS, (0.0, 0.5), "gt", 2, 8, meta=_meta(shard))
    s.update(seeded_acts((n, 3, 2, 8), seed=shard))
    return s


def _attribution(shard, n=4):
    a = AttributionStats(
        {"contribution": ScoreStats("contribution", LANGS, (0, 1), 3)}, _meta(shard)
    )
    g = torch.Generator().manual_seed(shard)
    codes = torch.randint(0, 4, (n, 2, 8), generator=g)
    a.update({"contribution": torch.rand(n, 3, 2, 8, generator=g)}, codes)
    return a


def _experiment(shard, n=4):
    rows = pd.DataFrame(
        [
            {"condition": c, "item_id": f"s{shard}i{i}", "language": x, "logprob": -0.5 * i - shard}
            for c in ("none", "deactivate")
            for i in range(n)
            for x in LANGS
        ]
    )
    e = ExperimentScores(meta=_meta(shard))
    e.update(rows)
    return e


BUILDERS = {"sharing": _sharing, "attribution": _attribution, "experiment": _experiment}


@pytest.mark.parametrize("kind", BUILDERS)
def test_protocol(kind, tmp_path):
    make = BUILDERS[kind]
    a, b = make(0), make(1)
    assert isinstance(a, Accumulator)
    ab, ba = a.merge(b), b.merge(a)
    assert ab.equals(ba) and ab.n_items == a.n_items + b.n_items == 8
    assert ab.meta["dataset_fingerprints"] == ["shard0", "shard1"]
    path = tmp_path / ("x.csv" if kind == "experiment" else "x.pt")
    ab.save(path)
    assert type(ab).load(path).equals(ab)
    assert not ab.equals(a)
    with pytest.raises(MultiNeuronError, match="same shard twice"):
        a.merge(make(0))
    other = make(1)
    other.meta["weights_fingerprint"] = "v" * 16
    with pytest.raises(MultiNeuronError, match="different model weights"):
        a.check_compatible(other)


def test_experiment_rows_scored_twice_are_named():
    e = _experiment(0)
    with pytest.raises(MultiNeuronError, match="condition 'none', item 's0i0', language 'en'"):
        e.update(e.rows.head(1))


def test_attribution_configuration_mismatch_is_named():
    a = _attribution(0)
    b = AttributionStats({"contribution": ScoreStats("contribution", LANGS, (0, 1), 5)}, _meta(1))
    with pytest.raises(MultiNeuronError, match="different k: 3 vs 5"):
        a.merge(b)


def test_experiment_scores_equal_within_a_relative_tolerance():
    """``rtol``: float values (log-prob, each per-token log-prob) within it, the rest exact."""
    rows = pd.DataFrame(
        {"condition": ["none", "none"], "item_id": ["a", "b"], "language": ["en", "en"],
         "greedy_match": [True, False], "logprob": [-21.853911876678467, -3.0],
         "token_logprobs": ["-5.07043 -16.7835", "-3"]}
    )  # fmt: skip
    a, b = ExperimentScores(meta=_meta(0)), ExperimentScores(meta=_meta(0))
    a.update(rows)
    near = rows.assign(logprob=[-21.853912353515625, -3.0])  # 1 float32 ulp of the token
    near.loc[0, "token_logprobs"] = "-5.07044 -16.7835"
    b.update(near)
    assert not a.equals(b) and a.equals(b, rtol=1e-5) and b.equals(a, rtol=1e-5)
    for col, value in [("logprob", [-21.86, -3.0]), ("greedy_match", [True, True])]:
        far = ExperimentScores(meta=_meta(0))
        far.update(rows.assign(**{col: value}))
        assert not a.equals(far, rtol=1e-5)
    far = ExperimentScores(meta=_meta(0))
    far.update(rows.assign(token_logprobs=["-5.07043 -16.7835", "-3 -1"]))
    assert not a.equals(far, rtol=1e-5)
