"""Built-in parallel task sets (shipped as data files; built by scripts/build_builtin_data.py).

Every task has few-shot prompts whose gold answer is the continuation of the prompt (with its
leading space where the language puts one). Names come from CLDR (via babel); templates are ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from ..errors import MultiNeuronError
from .answers import DelimiterSpec
from .datasets import ParallelDataset, load_parallel

TASKS: dict[str, str] = {
    "nli": "reasoning (NLI-style): does 'the number is b' follow from 'the number is a'? "
    "(true/false, balanced)",
    "facts": "fact probing: country -> capital (CLDR time-zone exemplar cities)",
    "qa": "question answering: 'What is the currency of <country>?' (CLDR currency names)",
    "translate_en_xx": "translation English -> xx of language names (CLDR)",
    "translate_xx_en": "translation xx -> English of language names (CLDR)",
}


def list_tasks() -> dict[str, str]:
    """Names and descriptions of the built-in tasks."""
    return dict(TASKS)


def load_task(
    name: str, languages: Sequence[str] | None = None, answer_delimiter: DelimiterSpec = "auto"
) -> ParallelDataset:
    """Load a built-in task, optionally restricted to ``languages`` (in that order).
    Its answers carry their delimiter already (``" Paris"``; none for zh/ja), so
    ``answer_delimiter`` matters only for copies edited without it."""
    if name not in TASKS:
        raise MultiNeuronError(f"unknown task {name!r}; built-in tasks: {sorted(TASKS)}")
    ref = resources.files("tl_multineuron") / "data" / f"{name}.jsonl"
    with resources.as_file(ref) as path:
        ds = load_parallel(path, task=name, answer_delimiter=answer_delimiter)
    return ds.select_languages(languages) if languages else ds
