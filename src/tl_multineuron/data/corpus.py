"""Running text per language: the input of token-level statistics (LAPE, Act-Prob-90p).

LAPE's layout (RUCAIBox/Language-Specific-Neurons): one file per language, one text per line.
:func:`load_corpus` reads a directory of ``LANG.txt`` files (the languages are the files found,
or those named) or a mapping ``{lang: file}``; :func:`corpus_from_dataset` turns any
:class:`~tl_multineuron.data.datasets.ParallelDataset` into a corpus (each item's prompt followed
by its gold answer: the built-in default). Blank lines are skipped; an empty or missing file is
an error naming the file and the language.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MultiNeuronError
from .datasets import ParallelDataset


@dataclass(frozen=True)
class Corpus:
    """Texts per language (``texts[lang]``, in file order) and where they came from."""

    texts: Mapping[str, tuple[str, ...]]
    name: str = "corpus"

    def __post_init__(self) -> None:
        if not self.texts:
            raise MultiNeuronError(f"corpus {self.name!r} holds no language")
        for lang, texts in self.texts.items():
            if not texts:
                raise MultiNeuronError(f"corpus {self.name!r}: language {lang!r} has no text")

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.texts)

    def n_texts(self, lang: str) -> int:
        return len(self.texts[lang])

    def split(self, held_out: float | int) -> tuple[Corpus, Corpus]:
        """(identification, held-out), disjoint by construction: the last ``held_out`` texts of
        every language (an int), or that share of them (a float in (0, 1)), held out; at least
        one text stays on each side."""
        count = isinstance(held_out, int) and not isinstance(held_out, bool)
        if count and held_out < 1 or not count and not 0 < held_out < 1:
            raise MultiNeuronError(
                f"held_out {held_out!r}; expected a count >= 1 or a share in (0, 1)"
            )
        first, last = {}, {}
        for lang, texts in self.texts.items():
            k = held_out if count else max(1, round(len(texts) * held_out))
            if len(texts) < 2 or (count and len(texts) <= k):
                raise MultiNeuronError(
                    f"corpus {self.name!r}: language {lang!r} has {len(texts)} text(s); holding "
                    f"out {k if count else 'a share'} needs at least {k + 1 if count else 2}"
                )
            k = min(len(texts) - 1, k)
            first[lang], last[lang] = texts[: len(texts) - k], texts[len(texts) - k :]
        return Corpus(first, f"{self.name}[identify]"), Corpus(last, f"{self.name}[held-out]")


def _read(path: Path, lang: str) -> tuple[str, ...]:
    if not path.is_file():
        raise MultiNeuronError(f"language {lang!r}: corpus file {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise MultiNeuronError(f"language {lang!r}: {str(path)!r} is not UTF-8 text ({e})") from e
    texts = tuple(x.strip() for x in lines if x.strip())
    if not texts:
        raise MultiNeuronError(f"language {lang!r}: corpus file {str(path)!r} holds no text")
    return texts


def load_corpus(
    source: str | Path | Mapping[str, str | Path], languages: Sequence[str] | None = None
) -> Corpus:
    """A corpus from a directory of ``LANG.txt`` files (one text per line) or a mapping
    ``{lang: file}``; ``languages`` picks (and orders) the languages, each of which must have a
    file."""
    if isinstance(source, Mapping):
        files = {str(k): Path(v) for k, v in source.items()}
        name = "corpus"
    else:
        root = Path(source)
        if not root.is_dir():
            raise MultiNeuronError(f"corpus directory {str(root)!r} does not exist")
        files = {p.stem: p for p in sorted(root.glob("*.txt"))}
        if not files:
            raise MultiNeuronError(
                f"corpus directory {str(root)!r} holds no LANG.txt file (one text per line)"
            )
        name = root.name
    if languages is not None:
        missing = [x for x in languages if x not in files]
        if missing:
            raise MultiNeuronError(
                f"corpus {name!r} has no file for language(s) {missing}; found {sorted(files)}"
            )
        files = {x: files[x] for x in languages}
    if len(files) < 2:
        raise MultiNeuronError(
            f"corpus {name!r}: {len(files)} language(s) {sorted(files)}; language-specific "
            "neurons need at least 2"
        )
    return Corpus({lang: _read(path, lang) for lang, path in files.items()}, name)


def corpus_from_dataset(ds: ParallelDataset) -> Corpus:
    """Every item's prompt followed by its gold answer (the prompt alone where the dataset has
    no answers), per language: a built-in task as running text."""
    texts = {
        x: tuple(it.prompts[x] + (ds.target(it, x) if ds.has_answers else "") for it in ds.items)
        for x in ds.languages
    }
    return Corpus(texts, ds.name)
