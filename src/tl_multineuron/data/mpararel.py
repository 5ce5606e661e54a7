"""mParaRel (Fierro & Søgaard 2022; ``coastalcph/mpararel``) as parallel fact-probing items.

Layout, as published in ``data/mpararel_reviewed/``::

    patterns/LANG/P36.jsonl   {"pattern": "the capital of [X] is [Y]", "checked-by-human": false}
    tuples/LANG/P36.jsonl     {"sub_uri": "Q227", "obj_uri": "Q9248", "sub_label": "Azerbaijan",
                               "obj_label": "Baku", "lineid": 0}

Per relation, the parallel items are the subjects (``sub_uri``) present in every requested
language; each is rendered with one pattern of its language: ``[X]`` the subject, ``[Y]`` the
answer slot, which must end the pattern (patterns with text after ``[Y]`` are skipped and
counted). The prompt is the text before ``[Y]`` without its trailing whitespace; the answer is
``obj_label``, after the pattern's own space where it has one before ``[Y]``, otherwise after the
dataset's answer delimiter (``"auto"``: a space, none after Chinese or Japanese text).

Which pattern (``pattern=``): ``"first-human"`` (default) the first human-checked one, or the
first usable one where a language has none human-checked (English and Japanese have none);
``"first"`` the first usable one; an integer, that line of the pattern file (0-based).

Left out, counted by reason and recorded (never silently): subjects missing in a language,
subjects listed twice in a relation (several objects: the answer would be ambiguous, as
mParaRel's ``--remove_repeated_subjects``), empty labels, and relations without a usable pattern
in some language. A subject whose object differs across languages is an error (the files do not
align).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import MultiNeuronError
from .answers import DelimiterSpec
from .datasets import ParallelDataset, ParallelItem, read_json_lines
from .language_codes import code_mapping, resolve_languages
from .sources import source_record

PATTERN_CHOICES = ("first-human", "first")
_TUPLE_KEYS = ("sub_uri", "obj_uri", "sub_label", "obj_label")


class _Fact(NamedTuple):
    obj_uri: str
    sub_label: str
    obj_label: str
    where: str


def _root(path: str | Path) -> Path:
    root = Path(path)
    for cand in (root, root / "mpararel_reviewed", root / "data" / "mpararel_reviewed"):
        if (cand / "patterns").is_dir() and (cand / "tuples").is_dir():
            return cand
    raise MultiNeuronError(
        f"mParaRel data {root.name!r}: expected its published layout, a directory with "
        "patterns/LANG/P*.jsonl and tuples/LANG/P*.jsonl (data/mpararel_reviewed)"
    )


def _jsonl(path: Path, lang: str) -> list[tuple[int, dict[str, Any]]]:
    return read_json_lines(path, f"{path.parent.name}/{path.name} (language {lang!r})")


def _relation_key(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"P(\d+)", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def _relations(root: Path, codes: dict[str, str]) -> dict[str, set[str]]:
    """Relation -> the requested languages that have both its pattern and tuple files."""
    out: dict[str, set[str]] = {}
    for lang, code in codes.items():
        pats = {p.stem for p in (root / "patterns" / code).glob("P*.jsonl")}
        tups = {p.stem for p in (root / "tuples" / code).glob("P*.jsonl")}
        for rel in pats & tups:
            out.setdefault(rel, set()).add(lang)
    return out


def _choose_pattern(
    path: Path, lang: str, choice: str | int, skipped: Counter[str]
) -> tuple[int, str] | None:
    """(line, pattern) of the chosen pattern, or None where the file has no usable one."""
    usable, human = [], []
    for n, row in _jsonl(path, lang):
        pat = row.get("pattern")
        where = f"patterns/{path.parent.name}/{path.name}, line {n} (language {lang!r})"
        if not isinstance(pat, str):
            raise MultiNeuronError(f"{where}: no 'pattern' string (got keys {sorted(row)})")
        if pat.count("[X]") != 1 or pat.count("[Y]") != 1:
            raise MultiNeuronError(
                f"{where}: pattern {pat!r} needs exactly one [X] (subject) and one [Y] (answer)"
            )
        if not pat.rstrip().endswith("[Y]"):
            skipped["[Y] not last"] += 1
            if choice == n - 1:
                return None
            continue
        usable.append((n - 1, pat))
        if row.get("checked-by-human") is True:
            human.append((n - 1, pat))
    if isinstance(choice, int):
        return next((u for u in usable if u[0] == choice), None)
    if choice == "first-human" and human:
        return human[0]
    return usable[0] if usable else None


def _render(pattern: str, subject: str) -> tuple[str, str]:
    """(prompt, the space before the answer where the pattern has one)."""
    before = pattern.rstrip()[: -len("[Y]")]
    prompt = before.rstrip()
    return prompt.replace("[X]", subject), (" " if before != prompt else "")


def _tuples(path: Path, lang: str) -> tuple[dict[str, _Fact], set[str]]:
    """sub_uri -> its fact (in file order), and the subjects listed more than once."""
    seen: dict[str, _Fact] = {}
    repeated = set()
    for n, row in _jsonl(path, lang):
        where = f"tuples/{path.parent.name}/{path.name}, line {n} (language {lang!r})"
        missing = [k for k in _TUPLE_KEYS if k not in row]
        if missing:
            raise MultiNeuronError(f"{where}: no {missing} (got keys {sorted(row)})")
        sub = str(row["sub_uri"])
        if sub in seen:
            repeated.add(sub)
        else:
            seen[sub] = _Fact(
                str(row["obj_uri"]), str(row["sub_label"]), str(row["obj_label"]), where
            )
    return seen, repeated


def load_mpararel(
    root: str | Path,
    languages: Sequence[str] | None = None,
    *,
    relations: Sequence[str] | None = None,
    pattern: str | int = "first-human",
    items_per_relation: int | None = None,
    limit: int | None = None,
    answer_delimiter: DelimiterSpec = "auto",
) -> ParallelDataset:
    """mParaRel's fact-probing items in ``languages`` (ISO codes; ``zh`` reads ``zh-hans``;
    default: every language of the data), relation by relation (``relations``, default every
    relation all of them have, in numeric order), at most ``items_per_relation`` per relation
    and ``limit`` in all. The module docstring says how items are aligned and rendered."""
    base = _root(root)
    if not (isinstance(pattern, int) or pattern in PATTERN_CHOICES):
        raise MultiNeuronError(
            f"mParaRel pattern {pattern!r}: expected one of {PATTERN_CHOICES} or a line number"
        )
    for name, n in (("items_per_relation", items_per_relation), ("limit", limit)):
        if n is not None and n < 1:
            raise MultiNeuronError(f"mParaRel {name} {n}: expected at least 1")
    have = sorted(
        p.name
        for p in (base / "tuples").iterdir()
        if p.is_dir() and (base / "patterns" / p.name).is_dir()
    )
    codes = resolve_languages("mpararel", languages, have, f"mParaRel data {base.name!r}")
    by_rel = _relations(base, codes)
    dropped: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    rels_out: dict[str, str] = {}
    if relations is None:
        rels = sorted(by_rel, key=_relation_key)
        for rel in [r for r in rels if len(by_rel[r]) < len(codes)]:
            rels_out[rel] = f"absent in {sorted(set(codes) - by_rel[rel])}"
            rels.remove(rel)
    else:
        rels = [r.strip() for r in relations]
        for rel in rels:
            absent = sorted(set(codes) - by_rel.get(rel, set()))
            if absent:
                raise MultiNeuronError(
                    f"mParaRel data {base.name!r}: relation {rel!r} is absent in language(s) "
                    f"{absent} (no patterns/LANG/{rel}.jsonl or tuples/LANG/{rel}.jsonl)"
                )
    items: list[ParallelItem] = []
    chosen: dict[str, dict[str, int]] = {}
    for rel in rels:
        found = {
            x: _choose_pattern(base / "patterns" / c / f"{rel}.jsonl", x, pattern, skipped)
            for x, c in codes.items()
        }
        pats = {x: p for x, p in found.items() if p is not None}
        if len(pats) < len(codes):
            rels_out[rel] = f"no usable pattern in {sorted(set(codes) - set(pats))}"
            continue
        chosen[rel] = {x: p[0] for x, p in pats.items()}
        read = {x: _tuples(base / "tuples" / c / f"{rel}.jsonl", x) for x, c in codes.items()}
        tups = {x: r[0] for x, r in read.items()}
        repeated = set().union(*(r[1] for r in read.values()))
        first = next(iter(codes))
        n_rel = 0
        for sub, fact in tups[first].items():
            if sub in repeated:
                dropped["subject listed twice in a relation (several objects)"] += 1
                continue
            rows = {x: tups[x][sub] for x in codes if sub in tups[x]}
            if len(rows) < len(codes):
                dropped["subject not in every language"] += 1
                continue
            for x, r in rows.items():
                if r.obj_uri != fact.obj_uri:
                    raise MultiNeuronError(
                        f"mParaRel items do not align: subject {sub} of {rel} has object "
                        f"{fact.obj_uri} in {first!r} ({fact.where}) but {r.obj_uri} in {x!r} "
                        f"({r.where})"
                    )
            if any(not r.sub_label.strip() or not r.obj_label.strip() for r in rows.values()):
                dropped["empty subject or object label"] += 1
                continue
            prompts, answers = {}, {}
            for x, r in rows.items():
                prompts[x], space = _render(pats[x][1], r.sub_label)
                answers[x] = space + r.obj_label
            items.append(ParallelItem(f"mpararel-{rel}-{sub}", prompts, answers, "mpararel"))
            n_rel += 1
            if items_per_relation is not None and n_rel >= items_per_relation:
                break
        if limit is not None and len(items) >= limit:
            break
    if limit is not None:
        items = items[:limit]
    if not items:
        raise MultiNeuronError(
            f"mParaRel data {base.name!r}: no subject of relation(s) {rels[:6]} is in every one of "
            f"{list(codes)} (left out: {dict(dropped)}, relations {rels_out}); ask for fewer "
            "languages or other relations"
        )
    options = {
        "relations": list(relations) if relations is not None else None,
        "pattern": pattern,
        "items_per_relation": items_per_relation,
        "limit": limit,
    }
    src = source_record(
        root, "mpararel", options, code_mapping(codes), dropped, rels_out,
        patterns_skipped=dict(skipped), pattern_lines=chosen,
    )  # fmt: skip
    return ParallelDataset(tuple(items), tuple(codes), "mpararel", answer_delimiter, src)
