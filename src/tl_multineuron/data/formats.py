"""Every data format a command reads, behind one function: our parallel files and the paper's
published datasets (XNLI, mParaRel, MzsRE), each with the options it takes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MultiNeuronError
from .answers import DelimiterSpec
from .datasets import ParallelDataset

#: format -> what it reads
DATA_FORMATS: dict[str, str] = {
    "parallel": "our parallel files: JSONL items or CSV/TSV/JSONL long rows (load_parallel)",
    "xnli": "XNLI: the release TSV, or the hub's per-language or all_languages layout (load_xnli)",
    "mpararel": "mParaRel: patterns/LANG/P*.jsonl and tuples/LANG/P*.jsonl (load_mpararel)",
    "mzsre-en2xx": "MzsRE, the fact in English, the question in xx (load_mzsre)",
    "mzsre-xx2en": "MzsRE, the fact in xx, the question in English (load_mzsre)",
}
#: format -> the options (keyword arguments of its loader) it takes
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "parallel": (),
    "xnli": ("prompt", "split"),
    "mpararel": ("relations", "pattern", "items_per_relation"),
    "mzsre-en2xx": ("question", "template"),
    "mzsre-xx2en": ("question", "template"),
}


def load_data(
    path: str | Path,
    fmt: str = "parallel",
    languages: Sequence[str] | None = None,
    *,
    answer_delimiter: DelimiterSpec = "auto",
    **options: Any,
) -> ParallelDataset:
    """The dataset at ``path`` in format ``fmt`` (:data:`DATA_FORMATS`), restricted to
    ``languages``; ``options`` go to that format's loader (:data:`FORMAT_OPTIONS`)."""
    if fmt not in DATA_FORMATS:
        raise MultiNeuronError(f"data format {fmt!r}: expected one of {sorted(DATA_FORMATS)}")
    bad = sorted(set(options) - set(FORMAT_OPTIONS[fmt]))
    if bad:
        raise MultiNeuronError(
            f"option(s) {bad} do not apply to data format {fmt!r} (it takes "
            f"{list(FORMAT_OPTIONS[fmt]) or 'none'})"
        )
    if fmt == "parallel":
        from .datasets import load_parallel

        return load_parallel(path, languages, answer_delimiter=answer_delimiter)
    if fmt == "xnli":
        from .xnli import load_xnli

        return load_xnli(path, languages, answer_delimiter=answer_delimiter, **options)
    if fmt == "mpararel":
        from .mpararel import load_mpararel

        return load_mpararel(path, languages, answer_delimiter=answer_delimiter, **options)
    from .mzsre import load_mzsre

    direction = fmt.removeprefix("mzsre-")
    return load_mzsre(path, direction, languages, answer_delimiter=answer_delimiter, **options)
