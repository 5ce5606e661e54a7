"""The peers' files both ways: csalt's {lang: LongTensor[m, 2]} pickles, LAPE's activation
statistics, CLaS-Bench's per-language vectors; round trips and errors naming file, language
and layer."""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers import tiny_model

import tl_multineuron as tlm

LANGS = ("en", "de", "fr")


def _sets() -> tlm.LanguageSets:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 2, 24, generator=g) < 0.1
    masks[2] = False  # a language without neurons
    return tlm.LanguageSets("act-prob-90p", LANGS, masks, masks.float())


def test_csalt_pickles_round_trip(tmp_path):
    sets = _sets()
    path = tmp_path / "lang_to_neuron.pkl"
    sets.save_csalt(path)
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert list(raw) == list(LANGS) and raw["en"].dtype == torch.long and raw["en"].shape[1] == 2
    assert raw["fr"].shape == (0, 2)
    back = tlm.load_csalt_sets(path, 2, 24, allow_pickle=True)
    assert back.languages == LANGS and torch.equal(back.masks, sets.masks)
    # csalt's own lang_neuron_data.pkl (the object's __dict__), its empty float tensor of LAPE
    theirs = {"method": "act_prob_90p", "L": 2, "lang_to_neuron": {
        "en": torch.tensor([[0, 3], [1, 7]]), "de": torch.tensor([])}}  # fmt: skip
    with open(tmp_path / "lang_neuron_data.pkl", "wb") as f:
        pickle.dump(theirs, f)
    got = tlm.load_csalt_sets(tmp_path / "lang_neuron_data.pkl", 2, 24, allow_pickle=True)
    assert got.languages == ("en", "de") and got.masks[0].nonzero().tolist() == [[0, 3], [1, 7]]
    assert not got.masks[1].any()


def _pickle(tmp_path, obj, name="bad.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_csalt_errors_name_file_language_and_layer(tmp_path):
    err = tlm.MultiNeuronError
    good = _pickle(tmp_path, {"en": torch.tensor([[0, 1]])}, "good.pkl")
    with pytest.raises(err, match="unpickling a file runs whatever code it names"):
        tlm.load_csalt_sets(good, 2, 24)
    cases = [
        ({"en": torch.tensor([[0.0, 1.0]])}, r"bad.pkl, language 'en': expected an integer "
                                             r"tensor \[m, 2\]"),
        ({"en": torch.tensor([0, 1, 2])}, r"language 'en': expected an integer tensor"),
        ({"de": torch.tensor([[2, 1]])}, r"language 'de': layer 2 outside the model's 2 layers"),
        ({"fr": torch.tensor([[1, 24]])}, r"language 'fr', layer 1: neuron 24 outside the "
                                          r"model's 24"),
        ({"en": [[0, 1]]}, r"language 'en': expected a tensor; got list"),
        ([1, 2], r"expected csalt's"),
    ]  # fmt: skip
    for obj, msg in cases:
        with pytest.raises(err, match=msg):
            tlm.load_csalt_sets(_pickle(tmp_path, obj), 2, 24, allow_pickle=True)
    with pytest.raises(err, match="does not exist"):
        tlm.load_csalt_sets(tmp_path / "none.pkl", 2, 24, allow_pickle=True)


def test_lape_activation_files_round_trip(tmp_path):
    model = tiny_model("gated", seed=1, n_ctx=64)
    corpus = tlm.Corpus({"en": ("the cat sat", "dogs bark"), "de": ("die Katze", "Hunde")}, "c")
    stats = tlm.record_token_stats(model, corpus)
    paths = stats.save_lape(tmp_path, "tiny")
    assert [p.name for p in paths] == ["activation.en.train.tiny", "activation.de.train.tiny"]
    raw = torch.load(paths[0], weights_only=True)
    assert set(raw) == {"n", "over_zero"} and raw["over_zero"].dtype == torch.int32
    assert isinstance(raw["n"], int) and raw["n"] == int(stats.n_tokens[0])
    back = tlm.load_lape_activations(tmp_path, ("en", "de"), "tiny", 2, 24)
    assert torch.equal(back.over_zero, stats.over_zero)
    assert torch.equal(back.n_tokens, stats.n_tokens)
    assert torch.equal(back.probabilities(), stats.probabilities())
    a = tlm.token_language_sets(back, "lape", top_rate=0.1, filter_rate=0.5)
    b = tlm.token_language_sets(stats, "lape", top_rate=0.1, filter_rate=0.5)
    assert torch.equal(a.masks, b.masks)
    with pytest.raises(tlm.MultiNeuronError, match="carry no squared values"):
        back.rms()


def test_lape_activation_errors(tmp_path):
    err = tlm.MultiNeuronError

    def write(lang, n, oz):
        torch.save({"n": n, "over_zero": oz}, tmp_path / f"activation.{lang}.train.m")

    write("en", 10, torch.zeros(2, 4, dtype=torch.int32))
    write("de", 0, torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(err, match=r"activation.de.train.m \(language 'de'\): n = 0"):
        tlm.load_lape_activations(tmp_path, ("en", "de"), "m")
    write("de", 10, torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(err, match=r"language 'de'\): over_zero of shape \(3, 4\); the model has 2"):
        tlm.load_lape_activations(tmp_path, ("en", "de"), "m")
    oz = torch.zeros(2, 4, dtype=torch.int32)
    oz[1, 2] = 11
    write("de", 10, oz)
    with pytest.raises(err, match=r"language 'de'\), layer 1: over_zero outside \[0, n=10\]"):
        tlm.load_lape_activations(tmp_path, ("en", "de"), "m")
    write("de", 10, torch.zeros(2, 4))
    with pytest.raises(err, match=r"language 'de'\): over_zero torch.float32"):
        tlm.load_lape_activations(tmp_path, ("en", "de"), "m")
    with pytest.raises(err, match=r"language 'fr': LAPE activation file.* does not exist"):
        tlm.load_lape_activations(tmp_path, ("en", "fr"), "m")


def test_clas_vectors_record_and_round_trip(tmp_path):
    model = tiny_model("gelu", seed=2, n_ctx=64)
    corpus = tlm.Corpus({"en": ("the cat sat", "dogs bark"), "de": ("die Katze sitzt",)}, "c")
    vec = tlm.record_language_vectors(model, corpus, batch_size=1)
    L, d = model.cfg.n_layers, model.cfg.d_model
    assert vec.vectors.shape == (2, L, d)
    for i, lang in enumerate(corpus.languages):  # a plain forward per text, BOS not counted
        total, n = torch.zeros(L, d, dtype=torch.float64), 0
        for ids in tlm.token_rows(model, corpus, lang):
            _, cache = model.run_with_cache(torch.tensor([ids]))
            for k in range(L):
                total[k] += cache[f"blocks.{k}.hook_resid_post"][0, 1:].double().sum(0)
            n += len(ids) - 1
        torch.testing.assert_close(vec.vectors[i], (total / n).float(), rtol=1e-5, atol=1e-6)
        assert vec.token_counts[i].tolist() == [n] * L and int(vec.num_tokens[i]) == n
    paths = vec.save_clas(tmp_path, "tiny")
    raw = torch.load(paths[0], weights_only=True)
    assert raw["steering_vectors"].shape == (L, d) and raw["token_counts"].dtype == torch.int64
    back = tlm.load_clas_vectors(tmp_path, corpus.languages, "tiny", L, d)
    assert back.equals(vec)
    torch.testing.assert_close(back.direction("de", "en", 1), vec.vectors[1, 1] - vec.vectors[0, 1])
    err = tlm.MultiNeuronError
    with pytest.raises(
        err,
        match=r"language 'en'\): steering_vectors of shape \(2, 16\); the "
        r"model has 3 layers x 16 \(another model's file\?\)",
    ):
        tlm.load_clas_vectors(tmp_path, corpus.languages, "tiny", 3, 16)
    torch.save({"steering_vectors": torch.zeros(L, d), "token_counts": torch.tensor([5, 0]),
                "num_tokens": 5}, tmp_path / "vector.fr.tiny")  # fmt: skip
    with pytest.raises(err, match=r"vector.fr.tiny \(language 'fr'\), layer 1: no token counted"):
        tlm.load_clas_vectors(tmp_path, ("en", "fr"), "tiny")
    with pytest.raises(err, match="language 'ja': CLaS-Bench vector file"):
        tlm.load_clas_vectors(tmp_path, ("ja",), "tiny")
    with pytest.raises(err, match="layer 5: the vectors have layers 0..1"):
        vec.direction("de", "en", 5)
