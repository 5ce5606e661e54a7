"""Audit of every built-in data file: answers are real answers, prompts end as their template
says (CLDR traps: tz-id fallbacks such as "Argentina/Buenos Aires" for a capital)."""

import zoneinfo

import pytest
from babel import Locale

import tl_multineuron as tlm

ANSWER_CUE = {
    "en": "Answer:",
    "de": "Antwort:",
    "fr": "Réponse :",
    "es": "Respuesta:",
    "ru": "Ответ:",
    "zh": "答案：",
    "ja": "答え：",
    "ar": "الجواب:",
}
# the shapes a tz-id fallback takes ("America/Buenos_Aires", "Buenos_Aires"); single-word ids
# such as "Singapore" or "Navajo" are also real names, so they are not evidence of a fallback
TZ_IDS = {t for t in zoneinfo.available_timezones() if "/" in t}
TZ_CITIES = {t.rsplit("/", 1)[-1] for t in TZ_IDS if "_" in t}


@pytest.mark.parametrize("task", sorted(tlm.TASKS))
def test_answers_are_real_answers(task):
    ds = tlm.load_task(task)
    assert ds.has_answers
    for it in ds:
        for x in ds.languages:
            a = it.answers[x]
            where = f"{task} item {it.item_id!r}, language {x!r}: answer {a!r}"
            assert a.strip(), where
            assert "/" not in a and "_" not in a, where
            assert a.strip() not in TZ_IDS and a.strip() not in TZ_CITIES, where
            assert a == a.rstrip() and "\n" not in a, where


def _last_line(prompt: str) -> str:
    return prompt.splitlines()[-1]


@pytest.mark.parametrize("task", sorted(tlm.TASKS))
def test_prompts_end_as_their_template_says(task):
    ds = tlm.load_task(task)
    for it in ds:
        for x in ds.languages:
            p = it.prompts[x]
            last = _last_line(p)
            where = f"{task} item {it.item_id!r}, language {x!r}: prompt ends {last[-40:]!r}"
            assert p == p.rstrip(), where  # the answer carries its own leading space
            if task in ("nli", "qa"):
                assert last.endswith(ANSWER_CUE[x]), where
            elif task == "facts":
                cc = it.item_id.removeprefix("capital-")
                sep = "：" if x in ("zh", "ja") else ":"
                assert last == Locale(x).territories[cc] + sep, where
            elif task == "translate_xx_en":
                assert last == "English:", where
            elif task == "translate_en_xx":
                assert last.removesuffix(":").casefold() == Locale(x).languages[x].casefold(), where
            else:  # a new task needs its template checked here
                pytest.fail(f"no template check for task {task!r}")
