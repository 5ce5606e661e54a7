"""Running text as rows of tokens, and the forward passes that read them batch by batch.

One implementation shared by every token-level statistic (LAPE's counts, Act-Prob-90p's
quantiles and relevance, CLaS-Bench's mean residual vectors): :func:`token_rows` cuts a
language's texts into rows, :func:`iter_token_batches` runs them through the model and yields,
per batch, every requested hook's values at the counted positions.

Rows (``window``):

* ``None`` (the default): every text is one row, BOS prepended as the model expects (a
  one-token line is one counted token; a text of no token is an error naming the line).
  Default because task prompts and short parallel sentences are what this library is mostly
  given: each row is then a whole text, and no text is cut or dropped.
* ``W`` (an int): the texts' tokens concatenated (no BOS between them) and cut into rows of
  ``W`` tokens, each behind a BOS; a last, shorter row keeps the remainder.
* ``"lape"`` / ``"lape:W"``: exactly LAPE's (RUCAIBox/Language-Specific-Neurons
  ``activation.py``): one token stream per language (each text tokenized without special
  tokens, concatenated), capped at LAPE's 99,999,744 tokens and cut to a multiple of the row
  length, the remainder dropped, rows of the model's context (``n_ctx``; ``lape:W``: of ``W``,
  as LAPE's ``max_model_len`` may be set), no BOS added to any row. One-token lines are just
  tokens of the stream. A stream shorter than one row is an error naming the language.

The BOS position, where one is prepended, is never counted (its activations are the same for
every row of every language); padding is never counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ..backends.attention import efficient_attention
from ..backends.devices import model_device
from ..data.corpus import Corpus
from ..errors import MultiNeuronError
from .recording import StopForward, encode, get_tokenizer, pad_ids

#: LAPE's cap on a language's token stream (``activation.py``: ``min(l, 99999744)``)
LAPE_TOKEN_CAP = 99_999_744

Window = int | str | None


def parse_window(window: Window) -> tuple[str, int | None]:
    """``(kind, length)`` of a ``window`` value: ``("text", None)``, ``("packed", W)``,
    ``("lape", None | W)``; anything else is an error."""
    if window is None:
        return "text", None
    if isinstance(window, bool):
        raise MultiNeuronError(
            f"window {window!r}: expected None, a row length, 'lape' or 'lape:W'"
        )
    if isinstance(window, int):
        if window < 2:
            raise MultiNeuronError(f"window {window}: need >= 2 tokens")
        return "packed", window
    text = str(window).strip()
    if text.isdigit():
        return parse_window(int(text))
    if text == "lape":
        return "lape", None
    if text.startswith("lape:") and text[5:].isdigit() and int(text[5:]) >= 2:
        return "lape", int(text[5:])
    raise MultiNeuronError(
        f"window {window!r}: expected a row length (>= 2), 'lape' (LAPE's rows of the model's "
        "context) or 'lape:W' (LAPE's rows of W tokens)"
    )


def token_rows(model: Any, corpus: Corpus, lang: str, window: Window = None) -> list[list[int]]:
    """The rows ``lang``'s texts are run as (see the module docstring); errors name the
    language and the line."""
    kind, width = parse_window(window)
    tok = get_tokenizer(model)
    bos = getattr(tok, "bos_token_id", None)
    n_ctx = getattr(model.cfg, "n_ctx", None)
    texts = corpus.texts[lang]
    if kind == "lape":
        length = width or n_ctx
        if not length:
            raise MultiNeuronError("window 'lape': the model has no context length; use lape:W")
        if n_ctx and length > n_ctx:
            raise MultiNeuronError(f"window lape:{length} exceeds the model's context ({n_ctx})")
        stream = [t for text in texts for t in encode(model, text, prepend_bos=False)]
        kept = min(len(stream), LAPE_TOKEN_CAP) // length * length
        if not kept:
            raise MultiNeuronError(
                f"{corpus.name}, language {lang!r}: the stream holds {len(stream)} tokens, fewer "
                f"than one row of {length} (LAPE drops the remainder); give a shorter row "
                "(--window lape:W) or more text"
            )
        return [stream[s : s + length] for s in range(0, kept, length)]
    head = [bos] if bos is not None else []
    if kind == "text":
        rows = []
        for i, text in enumerate(texts):
            ids = encode(model, text, prepend_bos=False)
            if not ids:
                raise MultiNeuronError(
                    f"{corpus.name}, language {lang!r}, line {i + 1}: {text[:40]!r} is no token"
                )
            rows.append(head + ids)
    else:
        stream = [t for text in texts for t in encode(model, text, prepend_bos=False)]
        if len(stream) < 2:
            raise MultiNeuronError(
                f"{corpus.name}, language {lang!r}: the texts hold {len(stream)} token(s)"
            )
        rows = [head + stream[s : s + width] for s in range(0, len(stream), width)]
        if len(rows) > 1 and len(rows[-1]) - len(head) < 2:
            rows.pop()  # a one-token remainder
    longest = max(len(r) for r in rows)
    if n_ctx and longest > n_ctx:
        raise MultiNeuronError(
            f"{corpus.name}, language {lang!r}: a row of {longest} tokens exceeds the model's "
            f"context ({n_ctx}); pack the texts with a window of at most {n_ctx - len(head)}"
        )
    return rows


def window_bos(model: Any, window: Window) -> bool:
    """Whether rows of ``window`` start with a BOS (never counted)."""
    return parse_window(window)[0] != "lape" and (
        getattr(get_tokenizer(model), "bos_token_id", None) is not None
    )


#: a hook to read: (TransformerLens hook suffix, one function per layer or None)
HookSpec = tuple[str, Sequence[Callable[[Tensor], Tensor]] | None]


def iter_token_batches(
    model: Any,
    corpus: Corpus,
    hooks: dict[str, HookSpec],
    *,
    window: Window = None,
    batch_size: int = 8,
    attention: str = "auto",
    progress: bool = False,
    desc: str = "token batches",
) -> Iterator[tuple[str, dict[str, Tensor]]]:
    """Per batch of rows: ``(language, {name: values [token, layer, width]})``, the values of
    every hook in ``hooks`` (``name -> (suffix, per-layer transforms)``, read at
    ``blocks.{layer}.{suffix}`` of every layer) at the counted positions, in float32 on the
    CPU. One forward per batch, stopped once every hook of every layer has fired."""
    L = int(model.cfg.n_layers)
    bos_first = window_bos(model, window)
    dev = model_device(model)
    plan = [(x, token_rows(model, corpus, x, window)) for x in corpus.languages]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(-(-len(r) // batch_size) for _, r in plan)
        bar = tqdm(total=total, desc=desc, unit="batch")
    n_hooks = L * len(hooks)
    try:
        for lang, rows in plan:
            for s in range(0, len(rows), batch_size):
                tokens, mask = pad_ids(model, rows[s : s + batch_size], "right")
                counted = mask.bool()
                if bos_first:
                    counted[:, 0] = False
                got: dict[tuple[str, int], Tensor] = {}

                def take(
                    act: Tensor,
                    key: tuple[str, int],
                    fn: Any,
                    counted: Tensor = counted,
                    got: dict = got,
                ) -> None:
                    a = fn(act) if fn is not None else act
                    got[key] = a[counted.to(a.device)].float().cpu()
                    if len(got) == n_hooks:
                        raise StopForward

                fwd = []
                for name, (suffix, fns) in hooks.items():
                    for k in range(L):
                        fn = fns[k] if fns is not None else None
                        fwd.append(
                            (
                                f"blocks.{k}.{suffix}",
                                lambda a, hook, key=(name, k), fn=fn: take(a, key, fn),
                            )
                        )
                with torch.inference_mode(), efficient_attention(model, attention):
                    try:
                        with model.hooks(fwd_hooks=fwd):
                            model(tokens.to(dev), attention_mask=mask.to(dev))
                    except StopForward:
                        pass
                if len(got) != n_hooks:
                    raise MultiNeuronError(f"hooks fired {len(got)} of {n_hooks} times")
                yield (
                    lang,
                    {
                        name: torch.stack([got[(name, k)] for k in range(L)], dim=1)
                        for name in hooks
                    },
                )
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
