"""The answer boundary: one delimiter convention for every measure (fast tier)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tl_multineuron as tlm
from tl_multineuron.data.answers import (
    AnswerBoundaryWarning,
    boundary_findings,
    continuation,
    delimiter_for,
    parse_delimiter,
    text_prefix_match,
    warn_boundary,
)
from tl_multineuron.data.datasets import ParallelDataset, ParallelItem
from tl_multineuron.errors import MultiNeuronError


@pytest.mark.parametrize(
    "prompt, answer, lang, spec, want",
    [
        ("France:", "Paris", "en", "auto", " Paris"),
        ("France:", " Paris", "en", "auto", " Paris"),  # the answer carries it already
        ("France: ", "Paris", "en", "auto", "Paris"),  # the prompt carries it
        ("法国：", "巴黎", "zh", "auto", "巴黎"),  # full-width colon, a script without spaces
        ("フランス：", "パリ", "ja-JP", "auto", "パリ"),
        ("ฝรั่งเศส", "ปารีส", "th", "auto", "ปารีส"),
        ("Translate into Chinese:", "你好", "zh", "auto", " 你好"),  # an English template
        ("France:", "Paris", "en", "", "Paris"),
        ("France:", "Paris", "en", "none", "Paris"),
        ("法国：", "巴黎", "zh", " ", " 巴黎"),
        ("法国：", "巴黎", "zh", {"zh": "space"}, " 巴黎"),
        ("France:", "Paris", "en", {"zh": "none"}, " Paris"),  # languages not named: auto
    ],
)
def test_continuation(prompt, answer, lang, spec, want):
    assert continuation(prompt, answer, lang, spec) == want


@given(st.text(min_size=1), st.text(min_size=1), st.sampled_from(["en", "zh", "ja", "ru"]))
def test_continuation_adds_at_most_one_delimiter(prompt, answer, lang):
    if not answer.strip():
        with pytest.raises(MultiNeuronError, match="only whitespace"):
            continuation(prompt, answer, lang)
        return
    got = continuation(prompt, answer, lang)
    assert got in (answer, " " + answer)
    if prompt[-1].isspace() or answer[0].isspace():
        assert got == answer
    assert continuation(prompt, got, lang) == got  # idempotent


def test_bad_settings_are_named():
    with pytest.raises(MultiNeuronError, match=r"answer delimiter '\\t'; expected 'auto'"):
        parse_delimiter("\t")
    with pytest.raises(MultiNeuronError, match="language 'zh'.*'newline'"):
        parse_delimiter("en=space,zh=newline")
    with pytest.raises(MultiNeuronError, match="LANG=VALUE"):
        parse_delimiter("en=space,zh")
    assert parse_delimiter("en=space, zh=none") == {"en": " ", "zh": ""}
    assert parse_delimiter("space") == " " and delimiter_for("auto", "en") == " "
    item = ParallelItem("a", {"en": "France:", "zh": "法国："}, {"en": "Paris", "zh": "巴黎"})
    with pytest.raises(MultiNeuronError, match=r"language\(s\) \['ja'\], which the dataset"):
        ParallelDataset((item,), ("en", "zh"), "caps", {"ja": "none"})
    with pytest.raises(MultiNeuronError, match="item 'b': answer for language 'zh' is empty"):
        ParallelItem("b", {"en": "x", "zh": "y"}, {"en": "Paris", "zh": "  "})


def _pair(delim="auto"):
    items = [
        ParallelItem(f"i{k}", {"en": "France:", "zh": "法国："}, {"en": "Paris", "zh": "巴黎"})
        for k in range(3)
    ]
    return ParallelDataset(tuple(items), ("en", "zh"), "caps", delim)


def test_dataset_target_views_and_fingerprint():
    ds = _pair()
    it = ds.items[0]
    assert ds.target(it, "en") == " Paris" and ds.target(it, "zh") == "巴黎"
    assert ds.answer(it, "en") == "Paris"  # the raw answer stays what the file says
    spaced = ParallelDataset(
        tuple(ParallelItem(i.item_id, i.prompts, {"en": " Paris", "zh": "巴黎"}) for i in ds.items),
        ds.languages,
        "caps",
    )
    # the fingerprint hashes what is scored: the same targets, the same fingerprint ...
    assert ds.fingerprint() == spaced.fingerprint()
    # ... and a delimiter that changes a target changes it
    glued = _pair({"en": "none"})
    assert glued.target(it, "en") == "Paris" and glued.fingerprint() != ds.fingerprint()
    for view in (glued.head(2), glued.slice(1), glued.select_languages(["zh", "en"])):
        assert view.answer_delimiter == {"en": ""}
    assert (
        glued.select_languages(["zh", "en"]).select_languages(["zh", "en"]).target(it, "en")
        == "Paris"
    )


def test_load_parallel_takes_the_delimiter(tmp_path):
    f = tmp_path / "caps.csv"
    f.write_text("id,lang,prompt,answer\n1,en,France:,Paris\n1,zh,法国：,巴黎\n", encoding="utf-8")
    ds = tlm.load_parallel(f)
    assert ds.target(ds.items[0], "en") == " Paris"
    ds = tlm.load_parallel(f, answer_delimiter="none")
    assert ds.target(ds.items[0], "en") == "Paris"


@pytest.mark.parametrize("task", tlm.list_tasks())
def test_builtin_answers_carry_their_delimiter(task):
    """The built-in data keeps its numbers: every target is the answer as written."""
    ds = tlm.load_task(task)
    assert all(ds.target(it, x) == it.answers[x] for it in ds.items for x in ds.languages)


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_boundary_findings_need_most_rows_of_a_language(recwarn):
    tok = _Tok({0: " Paris", 1: "Paris", 2: " Rome", 3: "Rome", 4: "巴黎"})
    langs = ["en", "en", "en", "zh", "zh"]
    model = [0, 2, 1, 4, 0]
    gold = [1, 3, 1, 4, 1]  # en: 2 of 3 rows differ only in the space; zh: 1 of 2
    found = boundary_findings(tok, langs, model, gold)
    assert [(f.language, f.n_rows, f.n_whitespace_only) for f in found] == [("en", 3, 2)]
    msg = found[0].message()
    assert "'en'" in msg and "2 of 3 rows" in msg and "--answer-delimiter space" in msg
    warn_boundary(found)
    assert [w.category for w in recwarn] == [AnswerBoundaryWarning]
    assert boundary_findings(tok, langs, gold, gold) == []
    with pytest.raises(MultiNeuronError, match="one of each per row"):
        boundary_findings(tok, langs, model[:2], gold)


def test_text_prefix_match():
    assert text_prefix_match(" Paris is", " Paris") and text_prefix_match("paris", "Paris")
    assert not text_prefix_match(" Pa", " Paris")
