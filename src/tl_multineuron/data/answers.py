"""The answer boundary: which text a gold answer is, as it continues its prompt.

A prompt ending in ``"France:"`` with the answer ``"Paris"`` is answered by a model with
``" Paris"``: scoring the tokens of ``"France:Paris"`` scores a string the model almost never
writes. Every measure that tokenizes or compares a gold answer (one-pass scoring, first-token
match, attribution and IG targets, steering, generation's text match) takes the answer through
:func:`continuation`, with one delimiter per dataset and language (lm-evaluation-harness calls
it ``target_delimiter``):

* ``"auto"`` (default): where the prompt ends in whitespace or the answer starts with it, none;
  otherwise a space, except for a language written without spaces (:data:`NO_SPACE_LANGUAGES`:
  zh, ja, th, ...) after a prompt that ends in such a script or in full-width punctuation
  (``"法国："``), where there is none. An English template before a Chinese answer
  (``"... Chinese:"``) is followed by a space, as the model writes it;
* ``" "`` (``"space"``) or ``""`` (``"none"``): that delimiter wherever the prompt does not end
  in whitespace and the answer does not start with it.

A dataset may also give one setting per language (``{"zh": "none", "en": "space"}``).
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MultiNeuronError

#: Languages (ISO 639 codes, by their first subtag) written without spaces between words.
NO_SPACE_LANGUAGES = frozenset(
    {"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "yue", "wuu", "cmn", "lzh", "hak", "nan"}
)
#: Accepted delimiter settings, and the names the CLI accepts for them.
DELIMITER_NAMES = {"auto": "auto", "space": " ", "none": "", " ": " ", "": ""}

#: A per-dataset setting: one for every language, or one per language.
DelimiterSpec = str | Mapping[str, str]


def base_language(language: str) -> str:
    """The first subtag of a language code, lower-cased (``zh-Hans`` -> ``zh``)."""
    return re.split(r"[-_]", language, maxsplit=1)[0].lower()


def writes_spaces(language: str) -> bool:
    """Whether ``language`` separates words with spaces (see :data:`NO_SPACE_LANGUAGES`)."""
    return base_language(language) not in NO_SPACE_LANGUAGES


def _one(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in DELIMITER_NAMES:
        raise MultiNeuronError(
            f"{where}: answer delimiter {value!r}; expected 'auto', 'space' (' ') or 'none' ('')"
        )
    return DELIMITER_NAMES[value]


def normalize_delimiter(
    spec: DelimiterSpec, languages: Sequence[str], where: str = "dataset"
) -> str | dict[str, str]:
    """``spec`` in canonical form (``'auto'``, ``' '``, ``''`` or ``{lang: one of those}``); a
    clear error for an unknown setting or a language the dataset does not have."""
    if isinstance(spec, Mapping):
        bad = [x for x in spec if x not in languages]
        if bad:
            raise MultiNeuronError(
                f"{where}: answer delimiter for language(s) {bad}, which the dataset does not "
                f"have (it has {list(languages)})"
            )
        return {x: _one(v, f"{where}, language {x!r}") for x, v in spec.items()}
    return _one(spec, where)


def parse_delimiter(text: str) -> str | dict[str, str]:
    """The CLI's ``--answer-delimiter``: ``auto``, ``space``, ``none``, or per language
    ``en=space,zh=none`` (languages not named get ``auto``)."""
    if "=" not in text:
        return _one(text.strip() or text, "--answer-delimiter")  # " " itself is a space
    out: dict[str, str] = {}
    for part in text.split(","):
        lang, sep, value = part.partition("=")
        if not sep or not lang.strip():
            raise MultiNeuronError(
                f"--answer-delimiter {text!r}: expected auto|space|none or LANG=VALUE,..."
            )
        out[lang.strip()] = _one(value.strip(), f"--answer-delimiter, language {lang.strip()!r}")
    return out


_NO_SPACE_SCRIPTS = ("THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def ends_unspaced(prompt: str) -> bool:
    """Whether the prompt ends in a character of a script written without spaces: East
    Asian wide or full-width (CJK, kana, '：'), Thai, Lao, Khmer, Myanmar or Tibetan."""
    if not prompt:
        return False
    ch = prompt[-1]
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return True
    return unicodedata.name(ch, "").startswith(_NO_SPACE_SCRIPTS)


def delimiter_for(spec: DelimiterSpec, language: str, prompt: str = "") -> str:
    """The delimiter ``spec`` gives ``language`` after ``prompt``: ``' '`` or ``''``."""
    one = spec.get(language, "auto") if isinstance(spec, Mapping) else spec
    one = DELIMITER_NAMES.get(one, one)
    if one == "auto":
        return "" if not writes_spaces(language) and ends_unspaced(prompt) else " "
    return one


def continuation(
    prompt: str, answer: str, language: str, spec: DelimiterSpec = "auto", label: str = ""
) -> str:
    """The gold answer as the text that follows ``prompt``: the delimiter is put in front only
    where neither the prompt ends in whitespace nor the answer starts with it."""
    where = label or f"language {language!r}"
    if not answer.strip():
        raise MultiNeuronError(f"{where}: the answer {answer!r} is only whitespace")
    if prompt[-1:].isspace() or answer[:1].isspace():
        return answer
    return delimiter_for(spec, language, prompt) + answer


def normalize_text(text: str) -> str:
    """Text as generation's prefix match compares it: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", text).strip().casefold()


def text_prefix_match(generated: str, target: str) -> bool:
    """Whether the generated text begins with the gold continuation (see :func:`normalize_text`;
    the one text comparison of generation, the relevance of steering included)."""
    return normalize_text(generated).startswith(normalize_text(target))


# -- the check after a baseline pass ---------------------------------------------------------------
@dataclass(frozen=True)
class BoundaryFinding:
    """A language where the model's first token and the gold's differ only in leading
    whitespace on most rows: the answers are probably scored across the wrong boundary."""

    language: str
    n_rows: int
    n_whitespace_only: int
    example_model: str
    example_gold: str

    def message(self) -> str:
        fix = (
            "--answer-delimiter space"
            if self.example_model[:1].isspace()
            else ("--answer-delimiter none")
        )
        return (
            f"language {self.language!r}: on {self.n_whitespace_only} of {self.n_rows} rows the "
            f"model's first token ({self.example_model!r}) and the gold answer's first token "
            f"({self.example_gold!r}) differ only in leading whitespace: the answers are probably "
            f"scored across the wrong boundary; set the answer delimiter ({fix}, or "
            f"answer_delimiter= in load_parallel / ParallelDataset)"
        )

    def to_dict(self) -> dict:
        return {**self.__dict__, "message": self.message()}


def boundary_findings(
    tokenizer: Any,
    languages: Sequence[str],
    model_first: Sequence[int | None],
    gold_first: Sequence[int],
) -> list[BoundaryFinding]:
    """Languages where, on more than half of their rows, the model's first token
    (``model_first``, greedy; ``None`` where the generation was empty, EOS first) and the gold
    answer's first token differ only in leading whitespace. One entry per row in each
    sequence."""
    if not (len(languages) == len(model_first) == len(gold_first)):
        raise MultiNeuronError(
            f"boundary check: {len(languages)} languages, {len(model_first)} model tokens and "
            f"{len(gold_first)} gold tokens; expected one of each per row"
        )
    per: dict[str, list[tuple[str, str] | None]] = {}
    cache: dict[int, str] = {}

    def text(t: int | None) -> str:
        if t is None:  # an empty generation decodes to nothing
            return ""
        if t not in cache:
            cache[t] = tokenizer.decode([int(t)])
        return cache[t]

    for x, m, g in zip(languages, model_first, gold_first, strict=True):
        a, b = text(m), text(g)
        hit = a != b and a.strip() == b.strip() and a.strip() != ""
        per.setdefault(x, []).append((a, b) if hit else None)
    out = []
    for x, flags in per.items():
        hits = [f for f in flags if f is not None]
        if 2 * len(hits) > len(flags):
            out.append(BoundaryFinding(x, len(flags), len(hits), hits[0][0], hits[0][1]))
    return out


class AnswerBoundaryWarning(UserWarning):
    """The model's first tokens and the gold's differ only in leading whitespace."""


def warn_boundary(findings: Sequence[BoundaryFinding]) -> None:
    """One warning per language whose answers look scored across the wrong boundary."""
    for f in findings:
        warnings.warn(f.message(), AnswerBoundaryWarning, stacklevel=3)
