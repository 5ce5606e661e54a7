"""Parallel datasets: the same item written in N languages, validated on construction.

File formats read by :func:`load_parallel`:

* JSONL, one item per line: ``{"id": ..., "task": ..., "prompts": {lang: text},
  "answers": {lang: text}}`` (``answers`` optional), or long rows (below);
* CSV / TSV / JSONL long rows, one row per item and language, columns
  ``id, lang, prompt`` and optionally ``answer, task``; the aliases ``item_id`` (id),
  ``language`` (lang), ``text`` (prompt) and ``target`` (answer) are read too.

Files are UTF-8, with or without a byte-order mark (spreadsheets on Windows write one).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import MultiNeuronError
from .answers import DelimiterSpec, continuation, normalize_delimiter


@dataclass(frozen=True)
class ParallelItem:
    """One item in several languages: a prompt per language and optional gold answers."""

    item_id: str
    prompts: Mapping[str, str]
    answers: Mapping[str, str] = field(default_factory=dict)
    task: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise MultiNeuronError(f"item id {self.item_id!r} must be a non-empty string")
        for lang, text in self.prompts.items():
            if not isinstance(text, str) or not text.strip():
                raise MultiNeuronError(
                    f"item {self.item_id!r}: prompt for language {lang!r} is empty"
                )
        for lang, text in self.answers.items():
            if not isinstance(text, str) or not text.strip():
                raise MultiNeuronError(
                    f"item {self.item_id!r}: answer for language {lang!r} is empty"
                )
        object.__setattr__(self, "prompts", MappingProxyType(dict(self.prompts)))
        object.__setattr__(self, "answers", MappingProxyType(dict(self.answers)))

    def to_dict(self) -> dict:
        return {
            "id": self.item_id,
            "task": self.task,
            "prompts": dict(self.prompts),
            "answers": dict(self.answers),
        }


@dataclass(frozen=True)
class ParallelDataset:
    """Items x languages. Every item has a prompt in every language of ``languages``.

    ``answer_delimiter``: what separates a prompt from its gold answer where neither carries
    whitespace at the boundary (:mod:`tl_multineuron.data.answers`): ``'auto'`` (a space, none for
    zh/ja/th/...), ``' '``, ``''``, or one per language. :meth:`target` applies it.

    ``source``: where the items came from, JSON-serializable (a published dataset's loader
    records its file by name, format, options, language-code mapping and the items it dropped);
    run files keep it. Views (:meth:`head`, :meth:`select_languages`, ...) carry it along."""

    items: tuple[ParallelItem, ...]
    languages: tuple[str, ...]
    name: str = ""
    answer_delimiter: DelimiterSpec = "auto"
    source: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", MappingProxyType(dict(self.source)))
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "languages", tuple(self.languages))
        object.__setattr__(
            self,
            "answer_delimiter",
            normalize_delimiter(self.answer_delimiter, self.languages, f"dataset {self.name!r}"),
        )
        langs = self.languages
        if len(langs) < 2:
            raise MultiNeuronError(
                f"dataset {self.name!r}: need at least 2 languages to compare, got {list(langs)}"
            )
        dup = sorted({x for x in langs if langs.count(x) > 1})
        if dup:
            raise MultiNeuronError(f"dataset {self.name!r}: languages repeated: {dup}")
        if not self.items:
            raise MultiNeuronError(f"dataset {self.name!r} has no items")
        seen: set[str] = set()
        for it in self.items:
            if it.item_id in seen:
                raise MultiNeuronError(f"dataset {self.name!r}: duplicate item id {it.item_id!r}")
            seen.add(it.item_id)
            missing = [x for x in langs if x not in it.prompts]
            if missing:
                raise MultiNeuronError(
                    f"dataset {self.name!r}: item {it.item_id!r} has no prompt for "
                    f"language(s) {missing} (it has {sorted(it.prompts)})"
                )

    # -- views ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ParallelItem]:
        return iter(self.items)

    def __getitem__(self, i: int) -> ParallelItem:
        return self.items[i]

    @property
    def n_languages(self) -> int:
        return len(self.languages)

    @property
    def has_answers(self) -> bool:
        return all(all(x in it.answers for x in self.languages) for it in self.items)

    def select_languages(self, languages: Sequence[str]) -> ParallelDataset:
        """The same items restricted to (and ordered as) ``languages``."""
        bad = [x for x in languages if x not in self.languages]
        if bad:
            raise MultiNeuronError(
                f"dataset {self.name!r} has no language(s) {bad}; it has {list(self.languages)}"
            )
        delim = self.answer_delimiter
        if isinstance(delim, Mapping):
            delim = {x: v for x, v in delim.items() if x in languages}
        return ParallelDataset(self.items, tuple(languages), self.name, delim, self.source)

    def with_items(self, items: Sequence[ParallelItem]) -> ParallelDataset:
        """Other items (same languages, name, delimiter and source)."""
        return ParallelDataset(
            tuple(items), self.languages, self.name, self.answer_delimiter, self.source
        )

    def head(self, n: int) -> ParallelDataset:
        """The first ``n`` items."""
        if n < 1:
            raise MultiNeuronError(f"head(n): n must be >= 1, got {n}")
        return self.with_items(self.items[:n])

    def slice(self, start: int, stop: int | None = None) -> ParallelDataset:
        """Items ``[start:stop]`` (Python slice semantics); a range that selects nothing is an
        error."""
        items = self.items[start:stop]
        if not items:
            raise MultiNeuronError(
                f"dataset {self.name!r}: items [{start}:{'' if stop is None else stop}] select "
                f"nothing (it has {len(self.items)} items)"
            )
        return self.with_items(items)

    def prompts(self, language: str) -> list[str]:
        return [it.prompts[language] for it in self.items]

    def answer(self, item: ParallelItem, language: str) -> str:
        """The gold answer of ``item`` in ``language``; a clear error if it has none."""
        if language not in item.answers:
            raise MultiNeuronError(
                f"dataset {self.name!r}: item {item.item_id!r} has no answer for language "
                f"{language!r}"
            )
        return item.answers[language]

    def target(self, item: ParallelItem, language: str) -> str:
        """The gold answer as the text that continues the prompt (the answer delimiter
        applied): what every measure tokenizes and compares."""
        return continuation(
            item.prompts[language],
            self.answer(item, language),
            language,
            self.answer_delimiter,
            f"dataset {self.name!r}, item {item.item_id!r}, language {language!r}",
        )

    def fingerprint(self) -> str:
        """A hash of the languages and, in item order, every id, prompt and gold answer as it
        continues the prompt (:meth:`target`): results of one dataset (or an edited copy, or
        another answer delimiter that changes a target) are never mixed with another's. Data
        whose answers already carry their delimiter keep the fingerprint they always had."""
        h = hashlib.sha256()
        h.update(json.dumps(self.languages).encode())
        for it in self.items:
            h.update(
                json.dumps(
                    [
                        it.item_id,
                        [it.prompts[x] for x in self.languages],
                        [self.target(it, x) if x in it.answers else None for x in self.languages],
                    ],
                    ensure_ascii=False,
                ).encode()
            )
        return h.hexdigest()[:16]

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for it in self.items:
                f.write(json.dumps(it.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping],
        languages: Sequence[str] | None = None,
        name: str = "",
        answer_delimiter: DelimiterSpec = "auto",
    ) -> ParallelDataset:
        """Build from item dicts (``id, prompts, answers, task``); ``languages`` defaults to
        the languages of the first item."""
        items = []
        for k, r in enumerate(records):
            if "prompts" not in r or not isinstance(r["prompts"], Mapping):
                raise MultiNeuronError(f"{name}: record {k} has no 'prompts' mapping: {dict(r)}")
            items.append(
                ParallelItem(
                    str(r.get("id", r.get("item_id", k))),
                    r["prompts"],
                    r.get("answers") or {},
                    str(r.get("task", "") or ""),
                )
            )
        if not items:
            raise MultiNeuronError(f"dataset {name!r} has no items")
        langs = tuple(languages) if languages else tuple(items[0].prompts)
        return cls(tuple(items), langs, name, answer_delimiter)


# canonical column -> accepted names, canonical first
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "item_id"),
    "lang": ("lang", "language"),
    "prompt": ("prompt", "text"),
    "answer": ("answer", "target"),
    "task": ("task",),
}
REQUIRED_COLUMNS = ("id", "lang", "prompt")


def _column_map(columns: Sequence[str], name: str) -> dict[str, str]:
    """canonical -> the file's column for it; a clear error naming what was expected and found."""
    found = [str(c) for c in columns]
    out: dict[str, str] = {}
    for canon, names in COLUMN_ALIASES.items():
        present = [n for n in names if n in found]
        if len(present) > 1:
            raise MultiNeuronError(
                f"{name}: columns {present} both mean {canon!r}; keep one of them"
            )
        if present:
            out[canon] = present[0]
    missing = [c for c in REQUIRED_COLUMNS if c not in out]
    if missing:
        expected = ", ".join(" or ".join(repr(n) for n in COLUMN_ALIASES[c]) for c in missing)
        raise MultiNeuronError(
            f"{name}: no column for {missing} (expected {expected}); the file has columns "
            f"{found}. Long rows need id, lang, prompt (and optionally answer, task); JSONL "
            "items need 'prompts' (and optionally 'answers')"
        )
    return out


def _from_long_rows(
    rows: Sequence[Mapping], languages, name: str, answer_delimiter: DelimiterSpec = "auto"
) -> ParallelDataset:
    if not rows:
        raise MultiNeuronError(f"dataset {name!r} has no rows")
    cols = _column_map(list(rows[0].keys()), name)
    rows = [{c: r.get(src) for c, src in cols.items()} for r in rows]
    by_id: dict[str, dict] = {}
    for k, r in enumerate(rows):
        for col in ("id", "lang", "prompt"):
            if col not in r or r[col] in (None, ""):
                raise MultiNeuronError(f"{name}: row {k + 1} has no {col!r} column value: {r}")
        rec = by_id.setdefault(
            str(r["id"]),
            {"id": str(r["id"]), "prompts": {}, "answers": {}, "task": r.get("task") or ""},
        )
        lang = str(r["lang"])
        if lang in rec["prompts"]:
            raise MultiNeuronError(f"{name}: item {r['id']!r} has two rows for language {lang!r}")
        rec["prompts"][lang] = r["prompt"]
        if r.get("answer") not in (None, ""):
            rec["answers"][lang] = r["answer"]
    records = list(by_id.values())
    if languages is None and records:
        seen: list[str] = []
        for rec in records:
            seen += [x for x in rec["prompts"] if x not in seen]
        languages = seen
    return ParallelDataset.from_records(records, languages, name, answer_delimiter)


def read_text(path: Path) -> str:
    """The file's text: UTF-8, a leading byte-order mark dropped; a clear error otherwise."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise MultiNeuronError(
            f"{path}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}, line {line}); "
            "save the file as UTF-8"
        ) from e


def read_json_lines(path: Path, where: str) -> list[tuple[int, dict[str, Any]]]:
    """A JSON-lines file's objects with their line numbers (blank lines skipped); a line that is
    not a JSON object is an error naming ``where`` and the line."""
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MultiNeuronError(f"{where}: line {n} is not valid JSON: {e}") from e
        if not isinstance(row, dict):
            raise MultiNeuronError(
                f"{where}: line {n} is a JSON {type(row).__name__}, expected an object"
            )
        rows.append((n, row))
    return rows


def load_parallel(
    path: str | Path,
    languages: Sequence[str] | None = None,
    task: str | None = None,
    answer_delimiter: DelimiterSpec = "auto",
) -> ParallelDataset:
    """Load a parallel dataset from JSONL, CSV or TSV (see module docstring);
    ``answer_delimiter``: see :class:`ParallelDataset`."""
    path = Path(path)
    if not path.is_file():
        raise MultiNeuronError(f"data file {str(path)!r} does not exist")
    name = path.stem
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = [row for _, row in read_json_lines(path, str(path))]
        if rows and "prompts" not in rows[0]:
            ds = _from_long_rows(rows, languages, name, answer_delimiter)
        else:
            ds = ParallelDataset.from_records(rows, languages, name, answer_delimiter)
    elif suffix in (".csv", ".tsv"):
        text = read_text(path)
        rows = list(
            csv.DictReader(
                io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","
            )
        )
        ds = _from_long_rows(rows, languages, name, answer_delimiter)
    else:
        raise MultiNeuronError(
            f"data file {str(path)!r}: unknown format {suffix!r}; expected .jsonl, .csv or .tsv"
        )
    if task:
        ds = ds.with_items([ParallelItem(i.item_id, i.prompts, i.answers, task) for i in ds.items])
    return ds
