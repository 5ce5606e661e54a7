import json

import pytest
from helpers import toy_dataset

from tl_multineuron import (
    MultiNeuronError,
    ParallelDataset,
    ParallelItem,
    list_tasks,
    load_parallel,
    load_task,
)


def test_builtin_tasks_cover_the_paper():
    tasks = list_tasks()
    assert {"nli", "facts", "qa", "translate_en_xx", "translate_xx_en"} <= set(tasks)
    for name in tasks:
        ds = load_task(name)
        assert len(ds) >= 100, name
        assert ds.has_answers
        assert len(ds.languages) >= 7
    ds = load_task("facts")
    assert len(ds.languages) >= 8
    assert {"ru", "zh", "ja", "ar"} <= set(ds.languages)
    # translation excludes English as a target
    assert "en" not in load_task("translate_en_xx").languages


def test_builtin_facts_are_cldr_names():
    ds = load_task("facts")
    it = next(i for i in ds if i.item_id == "capital-DE")
    assert it.answers["de"] == " Berlin" and it.answers["ru"] == " Берлин"
    assert it.prompts["ja"].endswith("ドイツ：") and it.answers["ja"] == "ベルリン"


def test_select_languages_and_errors():
    ds = load_task("facts", ["en", "ja"])
    assert ds.languages == ("en", "ja")
    with pytest.raises(MultiNeuronError, match="no language"):
        load_task("facts", ["en", "xx"])
    with pytest.raises(MultiNeuronError, match="unknown task"):
        load_task("nope")


def test_validation_errors_name_item_and_language():
    a = ParallelItem("a", {"en": "x", "de": "y"})
    b = ParallelItem("b", {"en": "x"})
    msg = r"item 'b' has no prompt for language\(s\) \['de'\]"
    with pytest.raises(MultiNeuronError, match=msg):
        ParallelDataset((a, b), ("en", "de"))
    with pytest.raises(MultiNeuronError, match="duplicate item id 'a'"):
        ParallelDataset((a, a), ("en", "de"))
    with pytest.raises(MultiNeuronError, match="at least 2 languages"):
        ParallelDataset((a,), ("en",))
    with pytest.raises(MultiNeuronError, match="prompt for language 'de' is empty"):
        ParallelItem("c", {"en": "x", "de": "  "})
    with pytest.raises(MultiNeuronError, match="repeated"):
        ParallelDataset((a,), ("en", "en"))


def test_jsonl_roundtrip_and_long_formats(tmp_path):
    ds = toy_dataset(4)
    ds.to_jsonl(tmp_path / "d.jsonl")
    back = load_parallel(tmp_path / "d.jsonl")
    assert back.languages == ds.languages and [i.item_id for i in back] == [i.item_id for i in ds]
    assert back[1].prompts == ds[1].prompts and back[1].answers == ds[1].answers
    rows = [(it.item_id, x, it.prompts[x], it.answers[x]) for it in ds for x in ds.languages]
    for sep, ext in ((",", "csv"), ("\t", "tsv")):
        p = tmp_path / f"d.{ext}"
        import csv

        with open(p, "w", newline="") as f:
            w = csv.writer(f, delimiter=sep)
            w.writerow(["id", "lang", "prompt", "answer"])
            w.writerows(rows)
        got = load_parallel(p)
        assert got.fingerprint() == ds.fingerprint()
    with open(tmp_path / "long.jsonl", "w") as f:
        for r in rows:
            row = dict(zip(["id", "lang", "prompt", "answer"], r, strict=True))
            f.write(json.dumps(row) + "\n")
    assert load_parallel(tmp_path / "long.jsonl").fingerprint() == ds.fingerprint()


def test_file_errors(tmp_path):
    with pytest.raises(MultiNeuronError, match="does not exist"):
        load_parallel(tmp_path / "none.jsonl")
    p = tmp_path / "d.csv"
    p.write_text("id,lang,prompt\na,en,hello\na,de,\n")
    with pytest.raises(MultiNeuronError, match="row 2"):
        load_parallel(p)
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a", "prompts": {"en": "x", "de": "y"}}\nnot json\n')
    with pytest.raises(MultiNeuronError, match="line 2"):
        load_parallel(p)
    p = tmp_path / "d.txt"
    p.write_text("x")
    with pytest.raises(MultiNeuronError, match="unknown format"):
        load_parallel(p)
