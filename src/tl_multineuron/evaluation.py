"""Task accuracy by greedy generation: generated-prefix match (primary) and first-token match.

First-token match is lenient where several answers share a first token (e.g. Japanese '1' for
1月 and 10月); the generated-prefix match is the honest primary metric. Both are reported.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .data import ParallelDataset
from .errors import MultiNeuronError
from .models import model_device
from .recording import encode, get_tokenizer


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def answer_first_token(model: Any, prompt: str, answer: str) -> int:
    """The first token of ``answer`` as it continues ``prompt`` (split at the boundary)."""
    p = encode(model, prompt)
    full = encode(model, prompt + answer)
    if len(full) > len(p) and full[: len(p)] == p:
        return full[len(p)]
    ids = encode(model, answer, prepend_bos=False)
    if not ids:
        raise MultiNeuronError(f"answer {answer!r} tokenizes to nothing")
    return ids[0]


def left_pad(model: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded tokens and attention mask (for cached generation)."""
    ids = [encode(model, p) for p in prompts]
    width = max(len(r) for r in ids)
    pad = getattr(get_tokenizer(model), "pad_token_id", None) or 0
    tokens = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, r in enumerate(ids):
        tokens[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return tokens, mask


def generate_greedy(
    model: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations (new token ids) of each prompt, batched with left padding and the
    model's own KV-cached ``generate``. Hooks active in ``model.hooks(...)`` apply."""
    out: list[list[int]] = []
    device = model_device(model)
    rng = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="generate", unit="batch")
    eos = getattr(get_tokenizer(model), "eos_token_id", None)
    for s in rng:
        tokens, mask = left_pad(model, prompts[s : s + batch_size])
        with torch.inference_mode():
            res = model.generate(
                tokens.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                return_type="tokens",
                verbose=False,
                attention_mask=mask.to(device),
                stop_at_eos=True,
            )
        new = res[:, tokens.shape[1] :].tolist()
        for row in new:
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            out.append(row)
    return out


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 8
    batch_size: int = 16


def evaluate(
    model: Any, dataset: ParallelDataset, config: EvalConfig | None = None, progress: bool = False
) -> pd.DataFrame:
    """One row per (item, language): the gold answer, the generated text (to the first
    newline), ``prefix_match`` and ``first_token_match``."""
    config = config or EvalConfig()
    if not dataset.has_answers:
        missing = next(
            (it.item_id, x)
            for it in dataset.items
            for x in dataset.languages
            if x not in it.answers
        )
        raise MultiNeuronError(
            f"dataset {dataset.name!r}: item {missing[0]!r} has no answer for language "
            f"{missing[1]!r}; accuracy needs gold answers"
        )
    pairs = [(it, x) for it in dataset.items for x in dataset.languages]
    prompts = [it.prompts[x] for it, x in pairs]
    gens = generate_greedy(model, prompts, config.max_new_tokens, config.batch_size, progress)
    tok = get_tokenizer(model)
    rows = []
    for (it, x), g in zip(pairs, gens, strict=True):
        ans = it.answers[x]
        text = tok.decode(g).split("\n")[0]
        first = answer_first_token(model, it.prompts[x], ans)
        rows.append(
            {
                "task": it.task or dataset.name,
                "item_id": it.item_id,
                "language": x,
                "answer": ans.strip(),
                "generated": text.strip(),
                "prefix_match": normalize(text).startswith(normalize(ans)),
                "first_token_match": bool(g) and g[0] == first,
            }
        )
    return pd.DataFrame(rows)


def accuracy_table(results: pd.DataFrame, metric: str = "prefix_match") -> pd.DataFrame:
    """Accuracy (%) per task (rows) and language (columns)."""
    return (
        results.pivot_table(
            index="task", columns="language", values=metric, aggfunc="mean", sort=False
        )
        * 100
    ).round(1)
