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
    printed = capsys.readouterr().out
    assert "selectivity" in printed and "GEMM rate" in printed and "x floor" in printed
    # the resumed run's phases beside their floors: only what ran in it (the matrix's parts)
    cost = pd.read_csv(d / "cost.csv")
    assert cost["phase"].iloc[-1] == "total" and "recording" not in set(cost["phase"])
    parts = cost[cost["phase"].str.startswith("matrix: ")]
    assert set(parts["phase"]) >= {"matrix: lape", "matrix: magnitude"}
    assert (cost["floor_s"] > 0).all() and (cost["ratio"] > 0).all()
    assert cost["seconds"].iloc[-1] == pytest.approx(cost["seconds"].iloc[:-1].sum())
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Language specificity" in page and "Selectivity" in page


def test_specificity_bad_input_is_named(hf, tmp_path, capsys):
    base = ["specificity", "--model", hf, "--out", str(tmp_path / "x"), *SMALL]
    assert main([*base, "--methods", "lape,entropy"]) == 2
    assert "specificity methods ['entropy']" in capsys.readouterr().err
    assert main([*base, "--top-rate", "2"]) == 2
    assert "top_rate 2.0; expected a number in (0, 1]" in capsys.readouterr().err


CORPUS = {
    "en": ["the cat sat on the mat", "dogs bark at night", "rain falls in spring",
           "we read books", "the sun is warm", "birds sing early", "a river runs"],
    "de": ["die Katze sitzt", "Hunde bellen nachts", "Regen faellt im Fruehling",
           "wir lesen Buecher", "die Sonne ist warm", "Voegel singen frueh", "ein Fluss"],
    "ja": ["猫が座る", "犬が夜に吠える", "春に雨が降る", "本を読む", "太陽は暖かい",
           "鳥が朝に歌う", "川が流れる"],
}  # fmt: skip


def _corpus_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for lang, texts in CORPUS.items():
        (d / f"{lang}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return d


def test_specificity_on_running_text_with_a_lape_file(hf, tmp_path, capsys):
    """--corpus: LAPE / Act-Prob-90p count every identification token (the last
    --eval-items texts held out and scored); a LAPE file's sets are judged beside them."""
    import torch

    from tl_multineuron import LanguageSets, load_model
    from tl_multineuron.sharing.recording import encode

    model = load_model(hf, device="cpu")
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    masks = torch.zeros(3, L, D, dtype=torch.bool)
    masks[0, 0, [1, 5]] = masks[1, 1, 7] = masks[2, 0, 3] = True
    lape = tmp_path / "gpt2.neuron.pth"
    LanguageSets("x", ("ja", "en", "de"), masks, masks.float()).save_lape(lape)
    out = tmp_path / "run"
    args = ["specificity", "--model", hf, "--out", str(out), *SMALL, "--corpus",
            str(_corpus_dir(tmp_path)), "--lape-file", str(lape), "--lape-languages",
            "ja,en,de", "--edit-bos", "--no-generate"]  # fmt: skip
    assert main(args) == 0
    d = out / "specificity"
    tokens = tlm_load_tokens(d / "token_stats.pt")
    assert tokens.languages == ("de", "en", "ja") and tokens.site == "mlp.hook_post"
    for i, x in enumerate(tokens.languages):  # 3 identification texts, BOS not counted
        n = sum(len(encode(model, t, prepend_bos=False)) for t in CORPUS[x][:3])
        assert int(tokens.n_tokens[i]) == n
    probs = pd.read_csv(d / "lape_probabilities.csv")
    assert list(probs["language"]) == ["de", "en", "ja"]
    assert (probs["share_zero"] + probs["share_one"] <= 1).all()
    rows = pd.read_csv(d / "matrix_rows.csv", keep_default_na=False, dtype={"item_id": str})
    base = rows[rows["method"] == "none"].set_index(["item_id", "language"])
    assert sorted(set(base.index.get_level_values(0))) == ["0", "1", "2", "3"]
    for k in range(4):  # the held-out texts, every token after BOS scored
        for x in ("de", "en", "ja"):
            text = CORPUS[x][3 + k]
            assert base.loc[(str(k), x), "n_tokens"] == len(encode(model, text)) - 1
    sizes = pd.read_csv(d / "sets.csv")
    got = sizes[sizes["method"] == "lape-file"].groupby("language")["size"].sum().to_dict()
    assert got == {"ja": 2, "en": 1, "de": 1}
    assert "lape-file" in set(rows["method"])
    matrix = pd.read_csv(d / "matrix.csv")
    assert {"ppl", "ppl_none", "ppl_change"} <= set(matrix.columns)
    run = json.loads((d / "run-specificity.json").read_text())
    ident = run["identity"]
    assert ident["specificity"]["include_bos"] and ident["specificity"]["unit"] == "token"
    assert ident["lape_file"]["languages"] == ["ja", "en", "de"]
    assert ident["corpus"]["fingerprint"] != ident["corpus"]["held_out"]
    capsys.readouterr()
    # languages that differ from the file's, a language the task lacks, a missing name list
    base_args = args[: args.index("--lape-languages")]
    assert main([*base_args, "--lape-languages", "ja,en,fr", "--overwrite"]) == 2
    assert "its languages ['ja', 'en', 'fr'] differ from the run's" in capsys.readouterr().err
    assert main([*base_args, "--overwrite"]) == 2
    assert "name its languages in order" in capsys.readouterr().err
    (tmp_path / "corpus" / "xx.txt").write_text("a b c\n" * 8)
    assert main([*args, "--overwrite"]) == 2
    assert "dataset 'facts' has no language(s) ['xx']" in capsys.readouterr().err
    (tmp_path / "corpus" / "xx.txt").write_text("")
    assert main([*args, "--overwrite", "--languages", "en,de,xx"]) == 2
    assert "holds no text" in capsys.readouterr().err


def tlm_load_tokens(path):
    from tl_multineuron import TokenStats

    return TokenStats.load(path)


LAPE_LANGS = ("en", "zh", "fr", "es", "vi", "id", "ja")


def test_specificity_on_a_corpus_alone(hf, tmp_path, capsys):
    """LAPE's own layout, seven languages, one-token lines among them ("Up"), nothing else
    given: LAPE and Act-Prob-90p identify on the texts, the matrix scores the held-out texts,
    what needs items is named and left out; --window lape runs LAPE's rows."""
    d = tmp_path / "mvicuna"
    d.mkdir()
    words = {"en": "Up", "zh": "上", "fr": "Oui", "es": "Sí", "vi": "Lên", "id": "Naik", "ja": "上"}
    for lang in LAPE_LANGS:
        lines = [f"{words[lang]} line {i} of text {lang} {'x' * (i % 5)}" for i in range(20)]
        lines.insert(3, words[lang])
        (d / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(["specificity", "--model", hf, "--corpus", str(d), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "sharing-matters needs items" in printed and "magnitude needs items" in printed
    assert "all-shared comparison needs items" in printed
    assert "output-language study needs items" in printed
    s = out / "specificity"
    sizes = pd.read_csv(s / "sets.csv")
    assert set(sizes["method"]) == {"lape", "act-prob-90p"}
    assert set(sizes["language"]) == set(LAPE_LANGS)
    rows = pd.read_csv(s / "matrix_rows.csv", keep_default_na=False, dtype={"item_id": str})
    assert set(rows["language"]) == set(LAPE_LANGS)
    assert sorted(set(rows["item_id"]), key=int) == [str(k) for k in range(16)]  # held out
    run = json.loads((s / "run-specificity.json").read_text())
    assert run["identity"]["dataset"] == "mvicuna" and "sharing-matters" in run["methods_left_out"]
    assert (s / "act_prob.pt").exists() and not (s / "calibration.pt").exists()
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Sets from the corpus alone" in page and "Left out: sharing-matters (needs items" in page
    # LAPE's rows: one stream per language, no BOS, rows of 16 tokens
    out2 = tmp_path / "run2"
    assert main(["specificity", "--model", hf, "--corpus", str(d), "--out", str(out2),
                 "--window", "lape:16", "--methods", "lape", "--eval-items", "4",
                 "--no-progress"]) == 0  # fmt: skip
    from tl_multineuron import TokenStats

    tokens = TokenStats.load(out2 / "specificity" / "token_stats.pt")
    assert tokens.meta["window"] == "lape:16" and (tokens.n_tokens % 16 == 0).all()
