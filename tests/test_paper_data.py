"""The paper's datasets read in their published layouts (XNLI, mParaRel, MzsRE): loaders on
written samples, bad input named, and analyze / intervene / grid end to end on each format."""

import json
import warnings

import pandas as pd
import pytest
import torch
from helpers import tiny_hf_dir
from published_layouts import (
    XNLI_HEADER,
    write_mpararel,
    write_mzsre,
    write_xnli_hub,
    write_xnli_tsv,
)

from tl_multineuron import (
    DroppedItemsWarning,
    MultiNeuronError,
    load_data,
    load_mpararel,
    load_mzsre,
    load_xnli,
)
from tl_multineuron.cli import main
from tl_multineuron.data.mzsre import MZSRE_TEMPLATE
from tl_multineuron.data.xnli import AUTHORS_PROMPT


def targets(ds, lang):
    return [ds.target(it, lang) for it in ds]


# -- XNLI -----------------------------------------------------------------------------------------
def test_xnli_release_tsv_with_the_authors_prompt(tmp_path):
    tsv = write_xnli_tsv(tmp_path / "xnli.test.tsv")
    ds = load_xnli(tsv, ["en", "de", "zh", "th"])
    assert ds.name == "xnli-test" and len(ds) == 3 and ds.languages == ("en", "de", "zh", "th")
    assert [it.item_id for it in ds] == ["xnli-test-1", "xnli-test-2", "xnli-test-3"]
    # the authors' notebook, verbatim: English instruction for every language
    assert ds[0].prompts["en"] == (
        'Take the following as truth: A man sleeps.\nThen the following statement: "He is awake." '
        'is "true", "false", or "inconclusive"?'
    )
    # de rows are in another order in the file: aligned by pairID
    assert ds[0].prompts["de"] == AUTHORS_PROMPT.format(
        premise="Ein Mann schläft.", hypothesis="Er ist wach."
    )
    assert "ผู้ชายคนหนึ่งนอนหลับ" in ds[0].prompts["th"]
    # gold labels as answers, after a space, none for zh (the notebook's `sent + ' ' + ans`)
    assert targets(ds, "en") == [" contradiction", " entailment", " neutral"]
    assert targets(ds, "th") == [" contradiction", " entailment", " neutral"]
    assert targets(ds, "zh") == ["contradiction", "entailment", "neutral"]
    assert ds.source["format"] == "xnli" and ds.source["path"] == "xnli.test.tsv"
    assert ds.source["options"]["layout"] == "release-tsv"
    # every language of the file by default, in its order; the first N items
    assert load_xnli(tsv).languages == ("en", "de", "zh", "th", "ar")
    assert len(load_xnli(tsv, ["en", "ar"], limit=2)) == 2
    words = load_xnli(tsv, ["en", "zh"], prompt="authors-words")
    assert targets(words, "en") == [" false", " true", " inconclusive"]


def test_xnli_hub_per_language_layout_equals_the_release_tsv(tmp_path):
    tsv = load_xnli(write_xnli_tsv(tmp_path / "xnli.test.tsv"), ["en", "de", "zh", "th", "ar"])
    hub = load_xnli(write_xnli_hub(tmp_path / "hub"), ["en", "de", "zh", "th", "ar"])
    assert hub.source["options"]["layout"] == "per-language"
    for lang in tsv.languages:
        assert hub.prompts(lang) == tsv.prompts(lang)
        assert targets(hub, lang) == targets(tsv, lang)


def test_xnli_all_languages_layout_and_localized_templates(tmp_path):
    rows = [
        {
            "premise": {"en": "A man sleeps.", "de": "Ein Mann schläft.", "zh": "一个人在睡觉。"},
            "hypothesis": {
                "language": ["de", "en", "zh"],
                "translation": ["Er ist wach.", "He is awake.", "他醒着。"],
            },
            "label": 2,
        },
        {
            "premise": {"en": "It rains.", "de": "Es regnet.", "zh": "下雨了。"},
            "hypothesis": {
                "language": ["de", "en", "zh"],
                "translation": ["Es ist nass.", "It is wet.", "很湿。"],
            },
            "label": 0,
        },
    ]
    p = tmp_path / "xnli_test.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    ds = load_xnli(p, ["en", "de", "zh"])
    assert ds.prompts("de")[1] == AUTHORS_PROMPT.format(
        premise="Es regnet.", hypothesis="Es ist nass."
    )
    assert targets(ds, "en") == [" contradiction", " entailment"]
    loc = load_xnli(p, ["en", "de", "zh"], prompt="localized")
    assert loc[0].answers["en"] == " False" and loc[1].answers["zh"] == "对"
    assert "He is awake." in loc[0].prompts["en"] and "A man sleeps." in loc[0].prompts["en"]
    with pytest.raises(MultiNeuronError, match=r"no localized XNLI prompt template.*\['th'\]"):
        load_xnli(write_xnli_tsv(tmp_path / "xnli.test.tsv"), ["en", "th"], prompt="localized")
    with pytest.raises(MultiNeuronError, match=r"no data for language\(s\) \['fr'\]"):
        load_xnli(p, ["en", "fr"])


def test_xnli_bad_input_names_file_line_and_language(tmp_path):
    good = write_xnli_tsv(tmp_path / "xnli.test.tsv").read_text().splitlines()
    bad = tmp_path / "bad.tsv"

    def write(lines):
        bad.write_text("\n".join(lines) + "\n")

    label = XNLI_HEADER.index("gold_label")
    rows = [line.split("\t") for line in good]
    rows[5][label] = "maybe"  # line 6 of the file, a de row
    write(["\t".join(r) for r in rows])
    with pytest.raises(MultiNeuronError, match=r"bad.tsv, line 6, language 'de'.*'maybe'"):
        load_xnli(bad)
    rows = [line.split("\t") for line in good]
    rows[5][label] = "neutral"  # de's pair 2 (line 6) disagrees with en's
    write(["\t".join(r) for r in rows])
    with pytest.raises(MultiNeuronError, match=r"do not align: pair '2' is 'entailment' in 'en'"):
        load_xnli(bad, ["en", "de"])
    write(good[:4] + good[5:])  # de lacks pair 3
    with pytest.raises(MultiNeuronError, match=r"pair '3' .* has no row in language 'de'"):
        load_xnli(bad, ["en", "de"])
    write(["language\tlabel\ttext"] + good[1:])
    with pytest.raises(MultiNeuronError, match="not XNLI's release TSV"):
        load_xnli(bad)
    with pytest.raises(MultiNeuronError, match="does not exist"):
        load_xnli(tmp_path / "missing.tsv")
    with pytest.raises(MultiNeuronError, match="prompt"):
        load_xnli(tmp_path / "xnli.test.tsv", prompt="french")


# -- mParaRel -------------------------------------------------------------------------------------
def test_mpararel_published_layout(tmp_path):
    write_mpararel(tmp_path)
    with pytest.warns(DroppedItemsWarning, match="2 item.* left out") as seen:
        ds = load_mpararel(tmp_path, ["en", "de", "zh", "ar"])
    said = str(seen[0].message)
    assert "1 subject listed twice" in said and "1 subject not in every language" in said
    assert "P1376 (absent in ['ar', 'de', 'zh'])" in said
    assert ds.languages == ("en", "de", "zh", "ar") and ds.name == "mpararel"
    assert [it.item_id for it in ds] == [
        "mpararel-P36-Q227", "mpararel-P36-Q183", "mpararel-P36-Q159",
        "mpararel-P37-Q142", "mpararel-P37-Q17",
    ]  # fmt: skip
    first = ds[0]
    # en has no human-checked pattern: its first usable one; de and zh: the first human-checked
    assert first.prompts == {
        "en": "Azerbaijan's capital city is",
        "de": "die hauptstadt von Aserbaidschan ist",
        "zh": "阿塞拜疆的首都是",
        "ar": "عاصمة أذربيجان هي",
    }
    assert [ds.target(first, x) for x in ds.languages] == [" Baku", " Baku", "巴库", " باكو"]
    src = ds.source
    assert src["language_codes"] == {"zh": "zh-hans"} and src["path"] == tmp_path.name
    assert src["pattern_lines"]["P36"] == {"en": 0, "de": 2, "zh": 1, "ar": 1}
    assert src["patterns_skipped"] == {"[Y] not last": 3}
    assert src["dropped"] == {
        "subject listed twice in a relation (several objects)": 1,
        "subject not in every language": 1,
    }
    assert src["relations_left_out"] == {"P1376": "absent in ['ar', 'de', 'zh']"}
    # without ar, Hungary is in every language
    three = load_mpararel(tmp_path / "data" / "mpararel_reviewed", ["en", "zh-hans", "de"])
    assert (
        "mpararel-P36-Q28" in [it.item_id for it in three] and three.source["language_codes"] == {}
    )


def test_mpararel_choices_of_relation_pattern_and_count(tmp_path):
    write_mpararel(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedItemsWarning)
        first = load_mpararel(tmp_path, ["en", "de"], relations=["P36"], pattern="first")
        assert first[0].prompts["de"] == "Aserbaidschan, das das kapital hat"
        line0 = load_mpararel(tmp_path, ["en", "de"], pattern=0)
        assert {it.item_id.split("-")[1] for it in line0} == {"P37"}  # de's line 0 ends in [X]
        assert line0.source["relations_left_out"] == {
            "P36": "no usable pattern in ['de']",
            "P1376": "absent in ['de']",
        }
        assert len(load_mpararel(tmp_path, ["en", "de"], items_per_relation=1)) == 2
        assert len(load_mpararel(tmp_path, ["en", "de"], limit=3)) == 3


def test_mpararel_bad_input(tmp_path):
    base = write_mpararel(tmp_path)
    with pytest.raises(
        MultiNeuronError, match=r"relation 'P1376' is absent in language\(s\) \['de'\]"
    ):
        load_mpararel(tmp_path, ["en", "de"], relations=["P1376"])
    with pytest.raises(MultiNeuronError, match=r"no data for language\(s\) \['ja'\]"):
        load_mpararel(tmp_path, ["en", "ja"])
    with pytest.raises(MultiNeuronError, match="expected its published layout"):
        load_mpararel(tmp_path / "nothing")
    pat = base / "patterns" / "de" / "P37.jsonl"
    pat.write_text('{"pattern": "die Amtssprache ist [Y]", "checked-by-human": true}\n')
    with pytest.raises(
        MultiNeuronError, match=r"patterns/de/P37.jsonl, line 1 \(language 'de'\).*one \[X\]"
    ):
        load_mpararel(tmp_path, ["en", "de"], relations=["P37"])
    tup = base / "tuples" / "ar" / "P36.jsonl"
    rows = [json.loads(x) for x in tup.read_text().splitlines()]
    rows[0]["obj_uri"] = "Q1"
    tup.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MultiNeuronError, match=r"do not align: subject Q227 of P36 .* in 'ar'"):
        load_mpararel(tmp_path, ["en", "ar"], relations=["P36"])


# -- MzsRE ----------------------------------------------------------------------------------------
def test_mzsre_en2xx_and_xx2en(tmp_path):
    write_mzsre(tmp_path)
    with pytest.warns(DroppedItemsWarning, match=r"1 empty src, src or alt \(language 'cs'\)"):
        en2xx = load_mzsre(tmp_path, "en2xx", ["en", "zh", "de", "cs"])
    assert en2xx.name == "mzsre-en2xx" and len(en2xx) == 2  # record 2 has no Czech answer
    assert en2xx.source["language_codes"] == {"cs": "cz"}
    assert en2xx.source["files"] == {
        "en": "mzsre_test_duplicate_enzh.json",  # en -> en reads enzh, as ReMaKE does
        "zh": "mzsre_test_duplicate_enzh.json",
        "de": "mzsre_test_duplicate_ende.json",
        "cs": "mzsre_test_duplicate_encz.json",
    }
    fact = "Question: Which family does Ramalinaceae belong to? Answer: Lamiinae\n"
    assert en2xx[1].prompts["zh"] == fact + "Question: Ramalinaceae属于哪个科？ Answer:"
    assert (
        en2xx[1].prompts["en"]
        == fact + "Question: Which family does Ramalinaceae belong to? Answer:"
    )
    assert targets(en2xx, "zh") == [" 2006年", " 沟胫天牛亚科"]
    assert targets(en2xx, "cs") == [" 2006", " Lamiinae"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedItemsWarning)
        xx2en = load_mzsre(tmp_path, "xx2en", ["zh", "de", "cs"], question="rephrase")
    assert xx2en[0].prompts["zh"] == (
        "Question: IAAF综合项目挑战赛的创立时间是什么时候？ Answer: 2006年\n"
        "Question: When was the IAAF Combined Events Challenge launched? Answer:"
    )
    assert targets(xx2en, "de") == [" 2006", " Lamiinae"]  # the English answer in every language
    own = load_mzsre(
        tmp_path, "en2xx", ["en", "de"], template="{fact_question} {fact_answer}\n{question}"
    )
    assert own[2].prompts["de"].endswith("Welche Firma hat den Volvo B12M hergestellt?")
    assert len(own) == 3 and own.source["options"]["template"] != MZSRE_TEMPLATE
    # a file named the other way round serves both directions
    (tmp_path / "data" / "MzsRE" / "mzsre_test_duplicate_ende.json").rename(
        tmp_path / "data" / "MzsRE" / "mzsre_test_duplicate_deen.json"
    )
    assert load_mzsre(tmp_path, "xx2en", ["de", "zh"]).source["files"]["de"].endswith("deen.json")


def test_mzsre_bad_input(tmp_path):
    base = write_mzsre(tmp_path, others=("zh", "de"))
    with pytest.raises(MultiNeuronError, match=r"no data for language\(s\) \['fr'\]"):
        load_mzsre(tmp_path, "en2xx", ["zh", "fr"])
    with pytest.raises(MultiNeuronError, match="direction"):
        load_mzsre(tmp_path, "en2fr")
    with pytest.raises(
        MultiNeuronError, match=r"fields \['fact_answer', 'fact_question', 'question'\]"
    ):
        load_mzsre(tmp_path, "en2xx", template="{question}")
    f = base / "mzsre_test_duplicate_ende.json"
    data = json.loads(f.read_text())
    data[1]["en"]["src"] = "Another question?"
    f.write_text(json.dumps(data))
    with pytest.raises(MultiNeuronError, match="do not align: record 1's English side differs"):
        load_mzsre(tmp_path, "en2xx", ["zh", "de"])
    f.write_text(json.dumps(data[:2]))
    with pytest.raises(
        MultiNeuronError, match="do not align: mzsre_test_duplicate_ende.json has 2"
    ):
        load_mzsre(tmp_path, "en2xx", ["zh", "de"])
    del data[0]["de"]
    f.write_text(json.dumps(data))
    with pytest.raises(
        MultiNeuronError, match=r"ende.json, record 0 \(language 'de'\): no 'de' object"
    ):
        load_mzsre(tmp_path, "en2xx", ["de"] + ["zh"])
    with pytest.raises(MultiNeuronError, match="published layout"):
        load_mzsre(tmp_path / "elsewhere", "en2xx")


def test_load_data_routes_formats_and_refuses_foreign_options(tmp_path):
    write_mzsre(tmp_path, others=("zh", "de"))
    ds = load_data(tmp_path, "mzsre-xx2en", ["zh", "de"], question="rephrase")
    assert ds.source["options"]["direction"] == "xx2en"
    with pytest.raises(
        MultiNeuronError, match=r"\['relations'\] do not apply to data format 'mzsre"
    ):
        load_data(tmp_path, "mzsre-xx2en", relations=["P36"])
    # views keep the source
    assert ds.head(1).source == ds.source and ds.select_languages(["de", "zh"]).source == ds.source


# -- every data command ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_data")
    write_mpararel(root / "mp")
    write_mzsre(root / "mz", others=("zh", "de"))
    return {
        "model": tiny_hf_dir(root / "model", n_inner=64, n_positions=1024),
        "xnli": (str(write_xnli_tsv(root / "xnli.test.tsv")), ["--languages", "en,de,zh,th"]),
        "mpararel": (str(root / "mp"), ["--languages", "en,de,zh,ar", "--pattern", "first"]),
        "mzsre-en2xx": (str(root / "mz"), ["--languages", "en,zh,de"]),
        "mzsre-xx2en": (str(root / "mz"), ["--languages", "zh,de", "--question", "rephrase"]),
    }


@pytest.mark.parametrize("fmt", ["xnli", "mpararel", "mzsre-en2xx", "mzsre-xx2en"])
def test_analyze_and_intervene_run_on_each_format(samples, fmt, tmp_path, capsys):
    path, extra = samples[fmt]
    common = ["--model", samples["model"], "--data", path, "--data-format", fmt, *extra]
    common += ["--no-progress"]
    out = tmp_path / "analyze"
    assert main(["analyze", *common, "--out", str(out), "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"data: {fmt} {path.split('/')[-1]}" in printed and "all-shared" in printed
    ident = json.loads((out / "run.json").read_text())["identity"]
    assert ident["data_source"]["format"] == fmt and "/" not in ident["data_source"]["path"]
    assert pd.read_csv(out / "layer_fractions.csv").shape[0] > 0
    out = tmp_path / "intervene"
    args = ["intervene", *common, "--out", str(out), "--eval-items", "1", "--calibration", "1"]
    args += ["--alphas", "2", "--seeds", "0,1", "--min-frequency", "0.5", "--allow-empty"]
    assert main(args) == 0
    scores = pd.read_csv(out / "scores.csv")
    n_langs = len(extra[1].split(","))
    assert len(scores) == scores.condition.nunique() * n_langs  # one evaluated item
    run = json.loads((out / "run-intervene.json").read_text())
    assert run["identity"]["data_source"]["format"] == fmt


def test_grid_runs_on_a_published_dataset(samples, tmp_path):
    path, extra = samples["mzsre-en2xx"]
    out = tmp_path / "grid"
    args = ["grid", "--model", samples["model"], "--data", path, "--data-format", "mzsre-en2xx"]
    args += [*extra, "--modes", "static", "--alphas", "2", "--no-matched", "--no-amplify-controls"]
    args += ["--eval-items", "1", "--calibration", "1", "--seeds", "0,1", "--allow-empty"]
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "grid.json").read_text())["tasks"] == ["mzsre-en2xx"]
    assert (out / "mzsre-en2xx" / "comparisons.csv").exists() and (out / "report.html").exists()


def test_data_format_flags_are_checked(samples, tmp_path, capsys):
    path, _ = samples["xnli"]
    base = ["analyze", "--model", samples["model"], "--out", str(tmp_path / "x"), "--no-progress"]
    assert main([*base, "--data", path, "--data-format", "xnli", "--relations", "P36"]) == 2
    assert "--relations does not apply to --data-format xnli" in capsys.readouterr().err
    assert main([*base, "--task", "facts", "--data-format", "xnli"]) == 2
    assert "go with --data, not --task" in capsys.readouterr().err
    mp, _ = samples["mpararel"]
    assert main([*base, "--data", mp, "--data-format", "mpararel", "--per-relation", "x"]) == 2
    assert "--per-relation 'x'" in capsys.readouterr().err


@pytest.mark.gemma
def test_paper_datasets_on_the_embedded_model(gemma, tmp_path):
    """Each paper dataset, as its loader renders it, through a recording pass and the scorer on
    Gemma 3 270M: prompts and gold answers tokenize, every row gets a finite log-prob."""
    import tl_multineuron as tlm

    write_mpararel(tmp_path / "mp")
    write_mzsre(tmp_path / "mz", others=("zh", "de"))
    sets = [
        load_xnli(write_xnli_tsv(tmp_path / "xnli.test.tsv")),
        load_mpararel(tmp_path / "mp", ["en", "de", "zh", "ar"]),
        load_mzsre(tmp_path / "mz", "en2xx", ["en", "zh", "de"]),
        load_mzsre(tmp_path / "mz", "xx2en", ["en", "zh", "de"]),
    ]
    for ds in sets:
        stats = tlm.analyze(gemma, ds, tlm.AnalysisConfig(batch_size=4)).stats
        assert stats.n_items == len(ds) and stats.languages == ds.languages
        rows = [(it.prompts[x], ds.target(it, x)) for it in ds for x in ds.languages]
        scores = tlm.score_answers(gemma, tlm.answer_rows(gemma, *zip(*rows, strict=True)))[0]
        assert torch.isfinite(scores.logprob).all() and (scores.n_tokens >= 1).all()
