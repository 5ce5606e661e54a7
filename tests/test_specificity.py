"""The deactivation matrix and selectivity: every-position scores against a plain forward,
hand-made rows for the tables."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_model, toy_dataset

from tl_multineuron import MultiNeuronError, SharingStats
from tl_multineuron.experiments.evaluation import generate_greedy
from tl_multineuron.experiments.interventions import Intervention, apply
from tl_multineuron.experiments.language_sets import identify_language_sets
from tl_multineuron.experiments.neuron_sets import NeuronSet
from tl_multineuron.experiments.specificity import (
    SpecificityConfig,
    deactivation_matrix,
    matrix_table,
    output_language,
    output_language_table,
    record_for_sets,
    selectivity,
    text_rows,
)
from tl_multineuron.sharing.recording import encode


@pytest.fixture(scope="module")
def native():
    return tiny_model("gated", seed=4)


def test_every_position_score_is_a_plain_forwards_log_likelihood(native):
    ds = toy_dataset(2, ("en", "de"))
    rows, keys = text_rows(native, ds)
    stats = SharingStats(("en", "de"), (0.0,), "gt", native.cfg.n_layers, native.cfg.d_mlp)
    stats.update(torch.randn(4, 2, native.cfg.n_layers, native.cfg.d_mlp))
    out = deactivation_matrix(native, ds, [], stats, SpecificityConfig(seeds=(0,)))
    assert set(out["method"]) == {"none"} and len(out) == len(keys)
    for r, (item, lang) in enumerate(keys.itertuples(index=False)):
        it = next(i for i in ds.items if i.item_id == item)
        ids = encode(native, it.prompts[lang] + ds.target(it, lang))
        with torch.inference_mode():
            lp = torch.log_softmax(native(torch.tensor([ids]))[0].double(), -1)
        want = np.mean([float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)])
        assert out["mean_ll"].iloc[r] == pytest.approx(want, abs=1e-5)
        assert out["n_tokens"].iloc[r] == len(ids) - 1


def test_matrix_rows_controls_and_empty_sets(native):
    ds = toy_dataset(3, ("en", "de"))
    L, D = native.cfg.n_layers, native.cfg.d_mlp
    stats = SharingStats(("en", "de"), (0.0,), "gt", L, D)
    g = torch.Generator().manual_seed(0)
    stats.update(torch.randn(6, 2, L, D, generator=g))
    sets = identify_language_sets(stats, "magnitude", top_rate=0.05)
    # nothing is specific in 100% of the items
    empty = identify_language_sets(stats, "sharing-matters", min_frequency=1.0)
    rows = deactivation_matrix(native, ds, [sets, empty], stats, SpecificityConfig(seeds=(0, 1)))
    edited = rows[rows["method"] == "magnitude"]
    assert set(edited["control"]) == {"set", "random", "matched"}
    assert (edited.groupby(["set_language", "control"])["set_size"].nunique() == 1).all()
    assert "sharing-matters" not in set(rows["method"])  # empty sets are not scored as zero
    table = matrix_table(rows, n_boot=200, sets=[sets, empty])
    assert len(table[~table["empty"]]) == 2 * 3 * 2  # set languages x controls x text languages
    gone = table[table["empty"]]  # the empty sets are named, never a silent zero
    assert set(gone["method"]) == {"sharing-matters"} and gone["delta"].isna().all()
    assert len(gone) == 2 * 2 and (gone["set_size"] == 0).all()
    t = table[~table["empty"]]
    assert (t["ci_low"] <= t["delta"]).all() and (t["delta"] <= t["ci_high"]).all()


def _rows(effect):
    """Hand-made rows: deactivating L's set changes text in L' by effect[L][L'] on every item."""
    out = []
    for k in range(6):
        for y in ("en", "de", "fr"):
            base = -2.0 - 0.1 * k
            out.append(
                {
                    "method": "none",
                    "set_language": "-",
                    "control": "none",
                    "seed": -1,
                    "set_size": 0,
                    "item_id": f"i{k}",
                    "language": y,
                    "mean_ll": base,
                }
            )
            for x in ("en", "de", "fr"):
                out.append({"method": "m", "set_language": x, "control": "set", "seed": -1,
                            "set_size": 3, "item_id": f"i{k}", "language": y,
                            "mean_ll": base + effect[x][y] + 0.01 * (k % 2)})  # fmt: skip
    return pd.DataFrame(out)


def test_selectivity_and_matrix_by_hand():
    diag = {
        x: {y: (-0.5 if x == y else -0.1) for y in ("en", "de", "fr")} for x in ("en", "de", "fr")
    }
    rows = _rows(diag)
    t = matrix_table(rows, n_boot=300).set_index(["set_language", "language"])
    assert t.loc[("de", "de"), "delta"] == pytest.approx(-0.5 + 0.005)
    assert t.loc[("de", "fr"), "delta"] == pytest.approx(-0.1 + 0.005)
    s = selectivity(rows, n_boot=300).set_index("set_language")
    assert s.loc["de", "selectivity"] == pytest.approx(-0.4)
    assert s.loc["all", "selectivity"] == pytest.approx(-0.4)
    assert s.loc["all", "ci_high"] < 0
    flat = {x: {y: -0.2 for y in ("en", "de", "fr")} for x in ("en", "de", "fr")}
    assert selectivity(_rows(flat), n_boot=300).set_index("set_language").loc[
        "all", "selectivity"
    ] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(MultiNeuronError, match="'none'"):
        matrix_table(rows[rows["method"] != "none"])
    # over chosen languages: the mean of their selectivities; a method lacking one: no row
    pair = selectivity(rows, n_boot=300, languages=["de", "fr"]).set_index("set_language")
    assert (
        pair.loc["all", "selectivity"] == pytest.approx(-0.4) and pair.loc["all", "over"] == "de,fr"
    )
    no_en = rows[~((rows["method"] == "m") & (rows["set_language"] == "en"))]
    lacking = selectivity(no_en, n_boot=300, languages=["en", "de"])
    assert "all" not in set(lacking["set_language"])
    # against a control: the paired difference of the set's and the control's selectivity
    flat_rows = _rows(flat)
    control = flat_rows[flat_rows["method"] == "m"].assign(control="random", seed=0)
    both = pd.concat([rows, control, control.assign(seed=1)], ignore_index=True)
    vs = selectivity(both, n_boot=300).set_index(["control", "set_language"])
    assert vs.loc[("random", "all"), "selectivity"] == pytest.approx(0.0, abs=1e-12)
    assert vs.loc[("set - random", "de"), "selectivity"] == pytest.approx(-0.4)
    assert vs.loc[("set - random", "all"), "selectivity"] == pytest.approx(-0.4)
    assert vs.loc[("set - random", "all"), "ci_high"] < 0


LANG_CHARS = {"en": "abcdef", "de": "ghijkl", "fr": "mnopqr"}
PLANT = {"de": 3, "fr": 5}  # layer-1 neurons made to fire on that language's tokens only


def planted_model():
    """A tiny GELU model whose layer-1 neurons 3 and 5 fire only on German / French tokens
    (the embedding carries the language on dims 0-2, which only those neurons read; the
    other dims are the same for the same letter position in every language) and write
    toward their language's tokens; no other neuron reads the language dims."""
    from tl_multineuron.sharing.recording import get_tokenizer

    m = tiny_model("gelu", seed=1, n_layers=2, d_mlp=24)
    tok = get_tokenizer(m)
    P = dict(m.named_parameters())

    def w(name):
        return P[f"layers.{name}._original_component.weight"]

    with torch.no_grad():
        E = P["tok_embed._original_component.weight"]
        E.mul_(0.1)
        P["pos._original_component.weight"].mul_(0.1)
        ids = {x: tok.convert_tokens_to_ids(list(c)) for x, c in LANG_CHARS.items()}
        for j in range(6):  # the same token identity in every language: only dims 0-2 differ
            for x in ("de", "fr"):
                E[ids[x][j]] = E[ids["en"][j]]
        # the language on dims 0-2, zero-sum and of one norm (the LayerNorm's mean and scale
        # do not depend on the language): en (2, -1, -1), de (-1, 2, -1), fr (-1, -1, 2)
        code = {"en": (6.0, -3.0, -3.0), "de": (-3.0, 6.0, -3.0), "fr": (-3.0, -3.0, 6.0)}
        E[:, :3] = torch.tensor(code["en"])
        for x in ("de", "fr"):
            E[ids[x], :3] = torch.tensor(code[x])
        W_U = P["head._original_component.weight"]
        mlp = "layers.{}._original_component.mlp._original_component.{}._original_component"
        attn_o = "layers.{}._original_component.attn._original_component.o._original_component"
        for layer in (0, 1):
            P[f"{mlp.format(layer, 'fc_in')}.weight"][:, :3] = 0  # blind to the language
            P[f"{attn_o.format(layer)}.weight"].zero_()  # no mixing across positions
            P[f"{attn_o.format(layer)}.bias"].zero_()
        P[f"{mlp.format(0, 'fc_out')}.weight"][:3] = 0  # dims 0-2 hold only the language
        P[f"{mlp.format(0, 'fc_out')}.bias"][:3] = 0
        fc_in, fc_out = mlp.format(1, "fc_in"), mlp.format(1, "fc_out")
        for x, k in PLANT.items():
            P[f"{fc_in}.weight"][k] = 0
            P[f"{fc_in}.weight"][k, 1 if x == "de" else 2] = 5.0
            P[f"{fc_in}.bias"][k] = -1.0
            toward = W_U[ids[x]].mean(0)
            P[f"{fc_out}.weight"][:, k] = 4.0 * toward / toward.norm()
    return m


def planted_dataset(n_items: int = 8):
    from tl_multineuron import ParallelDataset, ParallelItem

    items = []
    for i in range(n_items):
        prompts = {
            x: "".join(c[(i + j) % 6] for j in range(5 + i % 3)) for x, c in LANG_CHARS.items()
        }
        answers = {x: c[(i + 2) % 6] + c[(i + 4) % 6] for x, c in LANG_CHARS.items()}
        items.append(ParallelItem(f"p{i}", prompts, answers, "planted"))
    return ParallelDataset(tuple(items), tuple(LANG_CHARS), "planted", answer_delimiter="")


def test_planted_neurons_are_found_by_every_method_and_give_a_diagonal_matrix():
    import tl_multineuron as tlm
    from tl_multineuron.experiments.language_sets import ITEM_METHODS, equalize

    model, ds = planted_model(), planted_dataset()
    stats = record_for_sets(model, ds, batch_size=8)
    # the recording pass's statistics are analyze's
    assert stats.equals(tlm.analyze(model, ds, tlm.AnalysisConfig(batch_size=8)).stats)
    # LAPE's quantile filter and bar at 0.5: a toy's probabilities sit on a few values (the
    # paper's 0.95 is for token frequencies over large corpora)
    lape = {"top_rate": 2 / 48, "filter_rate": 0.5, "activation_bar_ratio": 0.5}
    params = {"lape": lape, "magnitude": {"top_rate": 1 / 48}}
    sets = [identify_language_sets(stats, m, **params.get(m, {})) for m in ITEM_METHODS]
    for s in sets:
        for x, k in PLANT.items():
            assert s.masks[s.languages.index(x), 1, k], (s.method, x)
    sets = equalize(sets)
    for s in sets:  # cut to the smallest: the planted neuron alone for de and fr
        assert s.size("de") == s.size("fr") == 1, s.method
    assert len({s.size("en") for s in sets} - {0}) <= 1  # equal where not empty
    rows = deactivation_matrix(model, ds, sets, stats, SpecificityConfig(seeds=(0,)))
    t = matrix_table(rows, n_boot=200)
    t = t[t.control == "set"].set_index(["method", "set_language", "language"])["delta"]
    for s in sets:
        for x in PLANT:
            own = t[(s.method, x, x)]
            others = [abs(t[(s.method, x, y)]) for y in LANG_CHARS if y != x]
            assert own < 0 and abs(own) > 10 * max(others), (s.method, x, own, others)
    sel = selectivity(rows, n_boot=200)
    assert (sel[(sel.control == "set") & (sel.set_language == "all")].ci_high < 0).all()


def test_output_language_deactivation_against_none_and_random():
    """On the planted model, deactivating the French neuron makes French continuations less
    French (the neuron writes toward French tokens); a detector that reads the letters."""
    model, ds = planted_model(), planted_dataset()
    stats = record_for_sets(model, ds, batch_size=8)
    sets = [identify_language_sets(stats, "magnitude", top_rate=1 / 48)]

    def detect(texts):
        def one(t):
            votes = {x: sum(ch in c for ch in t) for x, c in LANG_CHARS.items()}
            best = max(votes, key=votes.get)
            return best if votes[best] > 0 else None

        return [one(t) for t in texts]

    seen = []
    rows = output_language(model, ds, sets, ["fr"], max_new_tokens=3, detect=detect,
                           on_rows=seen.append)  # fmt: skip
    assert [(p["method"].iloc[0], p["control"].iloc[0]) for p in seen] == [
        ("none", "none"), ("magnitude", "set"), ("magnitude", "random"),
    ]  # fmt: skip
    assert len(rows) == 3 * len(ds) and set(rows["set_language"]) == {"fr"}
    t = output_language_table(rows, n_boot=200).set_index("control")
    assert t.loc["set", "share"] <= t.loc["set", "share_none"]
    assert t.loc["set", "ci_low"] <= t.loc["set", "delta"] <= t.loc["set", "ci_high"]
    # resume: what is done is not generated again
    again = output_language(model, ds, sets, ["fr"], max_new_tokens=3, detect=detect,
                            done={("none", "fr", "none"), ("magnitude", "fr", "set")})  # fmt: skip
    assert set(again["control"]) == {"random"}
    with pytest.raises(MultiNeuronError, match="needs a language identifier"):
        output_language(model, ds, sets, ["fr"])
    with pytest.raises(MultiNeuronError, match="'it' is not among"):
        output_language(model, ds, sets, ["it"], detect=detect)


@pytest.mark.parametrize("kind", ["native", "llama"])
def test_generation_under_per_row_masks_equals_one_generation_per_mask(kind, tmp_path):
    """Several masks' generations as rows of shared batches (batches that cut across masks
    and prompts of different lengths) give each mask's own generation under ``apply``."""
    from helpers import tiny_llama_dir

    from tl_multineuron import load_model
    from tl_multineuron.experiments.specificity import generate_under_masks

    model = (
        tiny_model("gated", seed=4)
        if kind == "native"
        else load_model(tiny_llama_dir(tmp_path / "m"))
    )
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    g = torch.Generator().manual_seed(0)
    masks = [None, torch.rand(L, D, generator=g) < 0.5, torch.rand(L, D, generator=g) < 0.2,
             torch.zeros(L, D, dtype=torch.bool)]  # fmt: skip
    masks[3][0] = True  # every neuron of block 0
    prompts = ["dog cat 1 ", "Hund 22 ab und so", "chien", "x y z w v u"]
    got = generate_under_masks(model, prompts, masks, max_new_tokens=4, batch_size=5)
    want = []
    for m in masks:
        edits = [] if m is None else [Intervention(NeuronSet(m), "zero", positions="all")]
        with apply(model, *edits):
            want.append(generate_greedy(model, prompts, 4, batch_size=4))
    assert got == want
    assert want[3] != want[0]  # the edits change the generations: the test can fail
    with pytest.raises(MultiNeuronError, match="mask 1 of shape"):
        generate_under_masks(model, prompts, [masks[1], masks[2][:1]], 2)


def test_controls_are_drawn_independently_per_language_and_bos_is_an_option(native, monkeypatch):
    """Two languages with the very same set get different random / matched draws (one seed
    per (method, language)); the experiments' control formula is unchanged; deactivating at
    BOS too is a stated option that changes the scores; perplexities are the rows' own."""
    from tl_multineuron.experiments import specificity as spec
    from tl_multineuron.experiments.language_sets import LanguageSets
    from tl_multineuron.experiments.neuron_sets import control_seed

    assert control_seed(3, "random") == 6 and control_seed(3, "matched") == 7
    assert control_seed(0, "random", "m", "en") != control_seed(0, "random", "m", "de")
    with pytest.raises(MultiNeuronError, match="control 'set'"):
        control_seed(0, "set")
    ds = toy_dataset(2, ("en", "de"))
    L, D = native.cfg.n_layers, native.cfg.d_mlp
    stats = SharingStats(("en", "de"), (0.0,), "gt", L, D)
    stats.update(torch.randn(4, 2, L, D, generator=torch.Generator().manual_seed(1)))
    mask = torch.zeros(L, D, dtype=torch.bool)
    mask[0, :4] = True
    same = LanguageSets("m", ("en", "de"), torch.stack([mask, mask]), torch.zeros(2, L, D))
    drawn = []
    real = spec._deactivate
    monkeypatch.setattr(spec, "_deactivate", lambda m: drawn.append(m) or real(m))
    rows = deactivation_matrix(native, ds, [same], stats, SpecificityConfig(seeds=(0,)))
    # order: per language set, random, matched; de's set is en's: scored once, rows equal
    assert len(drawn) == 5
    (en_set, en_rand, en_match), (de_rand, de_match) = drawn[:3], drawn[3:]
    assert torch.equal(en_set, mask)
    assert not torch.equal(en_rand, de_rand) and not torch.equal(en_match, de_match)
    assert all(int(m[0].sum()) == 4 for m in drawn)
    sets_ll = rows[rows["control"] == "set"].groupby("set_language")["mean_ll"].apply(list)
    assert sets_ll["en"] == sets_ll["de"] and len(sets_ll["en"]) == len(ds) * 2
    base_ll = rows[rows["method"] == "none"]["mean_ll"].to_numpy()
    assert not np.allclose(np.asarray(sets_ll["en"]), base_ll)
    table = matrix_table(rows, n_boot=100)
    base = rows[rows["method"] == "none"]
    for y in ("en", "de"):
        b = base[base["language"] == y]
        want = np.exp(-(b["mean_ll"] * b["n_tokens"]).sum() / b["n_tokens"].sum())
        assert table[table["language"] == y]["ppl_none"].tolist() == pytest.approx([want] * 6)
    monkeypatch.setattr(spec, "_deactivate", real)
    whole = torch.zeros(2, L, D, dtype=torch.bool)
    whole[:, 0, : D // 2] = True  # half of layer 0
    big = LanguageSets("m", ("en", "de"), whole, torch.zeros(2, L, D))
    got = {
        bos: deactivation_matrix(native, ds, [big], stats, SpecificityConfig(include_bos=bos))
        for bos in (False, True)
    }
    sets = [g[(g["method"] == "m") & (g["control"] == "set")]["mean_ll"].to_numpy() for g in
            got.values()]  # fmt: skip
    assert not np.allclose(sets[0], sets[1])


def test_scored_digests_carry_across_parts_and_identical_conditions_score_once(native):
    """A later call with ``scored`` from an earlier one scores only new masks, and its rows
    equal a fresh call's; the unedited model (``baseline``) is one more digest."""
    from tl_multineuron.experiments import specificity as spec
    from tl_multineuron.experiments.language_sets import LanguageSets

    ds = toy_dataset(2, ("en", "de"))
    L, D = native.cfg.n_layers, native.cfg.d_mlp
    stats = SharingStats(("en", "de"), (0.0,), "gt", L, D)
    stats.update(torch.randn(4, 2, L, D, generator=torch.Generator().manual_seed(2)))
    m = torch.zeros(2, L, D, dtype=torch.bool)
    m[0, 0, :3], m[1, 1, :3] = True, True
    a = LanguageSets("a", ("en", "de"), m, torch.zeros(2, L, D))
    b = LanguageSets("b", ("en", "de"), m.clone(), torch.zeros(2, L, D))  # a's very sets
    cfg = SpecificityConfig(seeds=(0,))
    scored: dict = {}
    first = deactivation_matrix(native, ds, [a], stats, cfg, scored=scored)
    assert len(scored) == 1 + 2 * 3  # none + per language: set, random, matched
    assert spec.mask_digest(m[0]) in scored and spec.mask_digest(None) in scored
    second = deactivation_matrix(native, ds, [b], stats, cfg, baseline=False, scored=scored)
    assert len(scored) == 1 + 2 * 3 + 2 * 2  # b's sets were a's: only its controls are new
    fresh = deactivation_matrix(native, ds, [b], stats, cfg, baseline=False)
    pd.testing.assert_frame_equal(second, fresh)
    own = first[(first["control"] == "set")]["mean_ll"].to_numpy()
    assert np.array_equal(own, second[second["control"] == "set"]["mean_ll"].to_numpy())
