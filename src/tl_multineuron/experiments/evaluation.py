"""Task accuracy by greedy generation: generated-prefix match (primary), text match and
first-token match.

``prefix_match`` asks whether the generated tokens begin with the gold answer's tokens: the
generation-side twin of one-pass ``greedy_match`` (equal on every row up to float ties).
``text_match`` is the lenient reading (the generated text, NFKC and case folded, begins with
the gold's; any tokenization); first-token match is lenient where several answers share a first
token (e.g. Japanese '1' for 1月 and 10月). All take the gold answer as it continues the prompt
(:meth:`ParallelDataset.target`, the answer delimiter applied), as one-pass scoring does.
Generation runs at least as many tokens as the longest gold answer has, so a correct answer is
never cut short.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..backends.batch_positions import running_batch
from ..backends.devices import model_device
from ..backends.tl_compat import align_cache_kwarg, generate_tokens, hf_model
from ..data.answers import boundary_findings, text_prefix_match, warn_boundary
from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from ..sharing.recording import (
    answer_ids,
    encode_prompts,
    get_tokenizer,
    last_position_unembed_hooks,
    pad_ids,
)
from .shared_generation import batch_prefixes, greedy_from_prefixes, shared_status


def left_pad(
    model: Any, prompts: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded tokens and attention mask (for cached generation)."""
    return pad_ids(model, encode_prompts(model, prompts, labels), "left")


class _NewlineStop:
    """Stop a batch once every row has generated a newline (answers are one line)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok, self.done = tokenizer, None

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **_: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        hit = torch.tensor(["\n" in self.tok.decode([t]) for t in last])
        self.done = hit if self.done is None else (self.done | hit)
        return self.done.clone().to(input_ids.device)


def _hf_generate(model: Any, tokens: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    from transformers import StoppingCriteriaList

    tok = get_tokenizer(model)
    stop = _NewlineStop(tok)
    align_cache_kwarg(model)
    return hf_model(model).generate(
        input_ids=tokens,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        stopping_criteria=StoppingCriteriaList([stop]),
        pad_token_id=tok.pad_token_id or 0,
        top_p=None,
        top_k=None,
    )


def generate_greedy(
    model: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    batch_size: int = 16,
    progress: bool = False,
    hooks_for_batch: Callable[[int, int], list] | None = None,
    backend: str = "tl",
    share_prefixes: bool = True,
) -> list[list[int]]:
    """Greedy continuations (new token ids) of each prompt, batched with left padding and a
    KV cache. Hooks active in ``model.hooks(...)`` apply at every step (with a KV cache a
    hook sees only the new position after the prompt); ``hooks_for_batch(start, stop)``
    gives extra hooks for the rows ``prompts[start:stop]`` (per-row interventions).

    backend: ``tl`` (TransformerLens ``generate``, default) or ``hf`` (the wrapped HF model's
    ``generate``, stopping at a newline; on the embedded model it was faster for long prompts
    (180 tokens: 22 s vs 39 s per 16 prompts) and slower for short ones).

    share_prefixes: prompts that share a few-shot prefix compute it once per call
    (:mod:`.shared_generation`; only without hooks, on the ``tl`` backend, on models with a HF
    cache; the same tokens up to float ties); ``False``: whole prompts always.
    """
    if backend not in ("tl", "hf"):
        raise MultiNeuronError(f"backend {backend!r}; expected 'tl' or 'hf'")
    use_hf = backend == "hf"
    if use_hf and not hasattr(hf_model(model), "generate"):
        raise MultiNeuronError(
            "backend 'hf' needs a TransformerBridge wrapping a HF model (TransformerLens 4.x); "
            f"this model is a {type(model).__name__}: use backend 'tl'"
        )
    pad = getattr(get_tokenizer(model), "pad_token_id", None)
    out: list[list[int]] = []
    device = model_device(model)
    rng = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="generate", unit="batch")
    eos = getattr(get_tokenizer(model), "eos_token_id", None)
    ids = encode_prompts(model, prompts, [f"prompt {i}" for i in range(len(prompts))])
    shared = None
    if share_prefixes and shared_status(model, backend, hooks_for_batch is not None)[0]:
        shared = batch_prefixes(model, ids)
    for s in rng:
        e = min(s + batch_size, len(prompts))
        at = shared(s, e) if shared is not None else None
        got = None
        if at is not None:
            got = greedy_from_prefixes(model, *at, ids[s:e], max_new_tokens, pad or 0)
        if got is not None:
            out += [_cut(row, eos) for row in got.tolist()]
            continue
        tokens, mask = pad_ids(model, ids[s:e], "left")
        tokens, mask = tokens.to(device), mask.to(device)
        extra = list(hooks_for_batch(s, e)) if hooks_for_batch is not None else []
        if not use_hf:
            # generate reads only the last position's logits (-1 for every left-padded row)
            extra += last_position_unembed_hooks(model)
        with (
            torch.inference_mode(),
            running_batch(mask.sum(1), tokens.shape[1], "left"),
            model.hooks(fwd_hooks=extra),
        ):
            if use_hf:
                res = _hf_generate(model, tokens, mask, max_new_tokens)
            else:
                res = generate_tokens(model, tokens, mask, max_new_tokens)
        for row in res[:, tokens.shape[1] :].tolist():
            row = _cut(row, eos)
            if use_hf and pad is not None and pad in row:  # HF pads rows that stopped early
                row = row[: row.index(pad)]
            out.append(row)
    return out


def _cut(row: list[int], eos: int | None) -> list[int]:
    """A continuation up to (without) its first EOS."""
    return row[: row.index(eos)] if eos is not None and eos in row else row


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 8
    batch_size: int = 16
    backend: str = "tl"


def evaluate(
    model: Any,
    dataset: ParallelDataset,
    config: EvalConfig | None = None,
    progress: bool = False,
    hooks_for_batch: Callable[[int, int], list] | None = None,
) -> pd.DataFrame:
    """One row per (item, language): the gold answer, the generated text (to the first
    newline), ``prefix_match`` (generated tokens begin with the gold's tokens), ``text_match``
    (lenient text comparison) and ``first_token_match``. Rows are item-major (all languages
    of item 0, then item 1, ...); ``hooks_for_batch(start, stop)`` gives hooks for a batch
    of those rows (per-row interventions). Without them, a language whose first generated
    tokens differ from the gold's only in leading whitespace on most rows is an
    :class:`~tl_multineuron.data.answers.AnswerBoundaryWarning`."""
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
    targets = [dataset.target(it, x) for it, x in pairs]
    gold = [
        answer_ids(model, p, t, f"item {it.item_id!r}, language {x!r}")
        for p, t, (it, x) in zip(prompts, targets, pairs, strict=True)
    ]
    gens = generate_greedy(
        model,
        prompts,
        max(config.max_new_tokens, max(len(g) for g in gold)),
        config.batch_size,
        progress,
        hooks_for_batch,
        config.backend,
    )
    tok = get_tokenizer(model)
    rows = []
    for (it, x), g, target, ids in zip(pairs, gens, targets, gold, strict=True):
        text = tok.decode(g).split("\n")[0]
        rows.append(
            {
                "task": it.task or dataset.name,
                "item_id": it.item_id,
                "language": x,
                "answer": target.strip(),
                "generated": text.strip(),
                "prefix_match": g[: len(ids)] == ids,
                "text_match": text_prefix_match(text, target),
                "first_token_match": bool(g) and g[0] == ids[0],
            }
        )
    if hooks_for_batch is None:  # the model as it is: check the answer boundary
        warn_boundary(
            boundary_findings(
                tok,
                [x for _, x in pairs],
                [g[0] if g else None for g in gens],
                [ids[0] for ids in gold],
            )
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
