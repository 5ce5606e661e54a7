"""MzsRE (Wang, Haddow & Birch 2023; ``weixuan-wang123/ReMaKE``, ``data/MzsRE/``) as
cross-lingual knowledge editing in the prompt, EN->XX and XX->EN.

Layout, as published: one file per language pair, ``mzsre_test_duplicate_{a}{b}.json``, a JSON
array whose records hold both languages::

    [{"en": {"subject": ..., "src": "When was the inception of X?", "rephrase": ..., "alt": "2006",
             "loc": ..., "loc_ans": ..., "portability": {...}},
      "zh": {"subject": ..., "src": "X的创立时间是什么时候？", "alt": "2006年", ...}},
     ...]

Both sides of a record are the same item, so the file of ``{a}{b}`` serves ``b{a}`` too (the
published set has ``en{xx}`` files only). Record *i* is the same item in every file (checked: the
English side must agree), so items are aligned across languages by their index.

An item of language *x* states the new fact in the source language and asks in the target
language (``template``, default :data:`MZSRE_TEMPLATE`, ReMaKE's in-context format with the
retrieved fact, ``evaluate.py``):

* ``en2xx``: the fact in English (``en.src`` + ``en.alt``), the question in *x*
  (``x.src``, or ``x.rephrase`` with ``question="rephrase"``), the answer ``x.alt``;
* ``xx2en``: the fact in *x* (``x.src`` + ``x.alt``), the question in English, the answer
  ``en.alt`` (the same text in every language).

English itself (en->en) reads the English side of the ``enzh`` file, as ReMaKE does (any other
English file where that one is missing). The files' codes ``cz`` (Czech) and ``du`` (Dutch) are
asked for as ``cs`` and ``nl``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MultiNeuronError
from .answers import DelimiterSpec
from .datasets import ParallelDataset, ParallelItem, read_text
from .language_codes import code_mapping, resolve_languages
from .sources import source_record

#: ReMaKE's prompt with the new fact retrieved (``easyeditor/evaluate/evaluate.py``).
MZSRE_TEMPLATE = "Question: {fact_question} Answer: {fact_answer}\nQuestion: {question} Answer:"
DIRECTIONS = ("en2xx", "xx2en")
QUESTIONS = ("src", "rephrase")
_FILE = re.compile(r"mzsre_test_duplicate_([a-z]{2})([a-z]{2})\.json")
_PIVOT = "en"


def _root(path: str | Path) -> tuple[Path, dict[tuple[str, str], Path]]:
    root = Path(path)
    for cand in (root, root / "MzsRE", root / "data" / "MzsRE"):
        if cand.is_dir():
            pairs = {}
            for p in cand.iterdir():
                m = _FILE.fullmatch(p.name)
                if m:
                    pairs[(m.group(1), m.group(2))] = p
            if pairs:
                return cand, pairs
    raise MultiNeuronError(
        f"MzsRE data {root.name!r}: expected its published layout, a directory with "
        "mzsre_test_duplicate_{src}{tgt}.json files (ReMaKE's data/MzsRE)"
    )


def _file_for(pairs: dict[tuple[str, str], Path], code: str) -> Path:
    """The file that holds ``code`` beside English (either order)."""
    if code == _PIVOT:
        others = sorted(b if a == _PIVOT else a for a, b in pairs if _PIVOT in (a, b))
        code = "zh" if "zh" in others else others[0]
    return pairs.get((_PIVOT, code)) or pairs[(code, _PIVOT)]


def _records(path: Path, sides: tuple[str, str], lang: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise MultiNeuronError(f"{path.name} (language {lang!r}): not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise MultiNeuronError(
            f"{path.name} (language {lang!r}): expected a JSON array of records, got a "
            f"{type(data).__name__}"
        )
    for k, rec in enumerate(data):
        for side in sides:
            if not isinstance(rec, dict) or not isinstance(rec.get(side), dict):
                raise MultiNeuronError(
                    f"{path.name}, record {k} (language {lang!r}): no {side!r} object (keys: "
                    f"{sorted(rec) if isinstance(rec, dict) else type(rec).__name__})"
                )
    return data


def _field(rec: dict[str, Any], side: str, key: str, where: str) -> str:
    value = rec[side].get(key)
    if not isinstance(value, str):
        raise MultiNeuronError(f"{where}: {side}.{key} is {value!r}, expected a string")
    return value


def load_mzsre(
    root: str | Path,
    direction: str,
    languages: Sequence[str] | None = None,
    *,
    question: str = "src",
    template: str = MZSRE_TEMPLATE,
    limit: int | None = None,
    answer_delimiter: DelimiterSpec = "auto",
) -> ParallelDataset:
    """MzsRE's items in ``direction`` (``"en2xx"`` or ``"xx2en"``) for ``languages`` (the
    target languages of en2xx, the source languages of xx2en; ISO codes; default: English and
    every language with a file beside it), the first ``limit`` items. ``template`` has the
    fields ``{fact_question}``, ``{fact_answer}`` and ``{question}``."""
    if direction not in DIRECTIONS:
        raise MultiNeuronError(f"MzsRE direction {direction!r}: expected one of {DIRECTIONS}")
    if question not in QUESTIONS:
        raise MultiNeuronError(f"MzsRE question {question!r}: expected one of {QUESTIONS}")
    fields = set(re.findall(r"{(\w*)}", template))
    need = {"fact_question", "fact_answer", "question"}
    if fields != need:
        raise MultiNeuronError(
            f"MzsRE template {template!r}: expected the fields {sorted(need)}, got {sorted(fields)}"
        )
    if limit is not None and limit < 1:
        raise MultiNeuronError(f"MzsRE limit {limit}: expected at least 1 item")
    base, pairs = _root(root)
    have = sorted({b if a == _PIVOT else a for a, b in pairs if _PIVOT in (a, b)})
    if not have:
        raise MultiNeuronError(f"MzsRE data {base.name!r}: no file pairs English with a language")
    codes = resolve_languages("mzsre", languages, [_PIVOT, *have], f"MzsRE data {base.name!r}")
    files = {x: _file_for(pairs, c) for x, c in codes.items()}
    sides = {x: (_PIVOT, _PIVOT if c == _PIVOT else c) for x, c in codes.items()}
    recs = {x: _records(files[x], sides[x], x) for x in codes}
    first = next(iter(codes))
    n = len(recs[first])
    for x in codes:
        if len(recs[x]) != n:
            raise MultiNeuronError(
                f"MzsRE items do not align: {files[x].name} has {len(recs[x])} records, "
                f"{files[first].name} {n}"
            )
    dropped: Counter[str] = Counter()
    items = []
    for k in range(n):
        ref = recs[first][k][_PIVOT]
        prompts, answers, empty = {}, {}, None
        for x, code in codes.items():
            rec = recs[x][k]
            where = f"{files[x].name}, record {k} (language {x!r})"
            if (rec[_PIVOT].get("src"), rec[_PIVOT].get("alt")) != (ref.get("src"), ref.get("alt")):
                raise MultiNeuronError(
                    f"MzsRE items do not align: record {k}'s English side differs between "
                    f"{files[first].name} ({ref.get('src')!r}) and {files[x].name} "
                    f"({rec[_PIVOT].get('src')!r})"
                )
            fact, ask = (_PIVOT, code) if direction == "en2xx" else (code, _PIVOT)
            fq, fa, q, a = (
                _field(rec, side, key, where).strip()
                for side, key in ((fact, "src"), (fact, "alt"), (ask, question), (ask, "alt"))
            )
            if not (fq and fa and q and a):
                empty = x
                break
            prompts[x] = template.format(fact_question=fq, fact_answer=fa, question=q)
            answers[x] = a
        if empty is not None:
            dropped[f"empty src, {question} or alt (language {empty!r})"] += 1
            continue
        items.append(ParallelItem(f"mzsre-{direction}-{k}", prompts, answers, f"mzsre-{direction}"))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise MultiNeuronError(
            f"MzsRE data {base.name!r}: no complete item (left out: {dict(dropped)})"
        )
    options = {"direction": direction, "question": question, "template": template, "limit": limit}
    src = source_record(
        root, f"mzsre-{direction}", options, code_mapping(codes), dropped,
        files={x: f.name for x, f in files.items()},
    )  # fmt: skip
    return ParallelDataset(tuple(items), tuple(codes), f"mzsre-{direction}", answer_delimiter, src)
