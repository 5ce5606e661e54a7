"""Recording MLP neuron activations from parallel prompts, reduced on the device.

Prompts are right-padded into one batch: with a causal model the pads come after every real
token, so no real token attends to them and positions (absolute or rotary) are those of the
prompt alone. No attention mask or position-id shifting is needed, and batched results equal
one-prompt-at-a-time results (tested on the embedded Gemma model). Hooks reduce each
``[batch, pos, d_mlp]`` activation to ``[batch, d_mlp]`` in place (last real token, or an
aggregate over the prompt's tokens); full activations are never cached, and the forward pass is
stopped after the last recorded layer (the unembedding is never computed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..backends.attention import attention_implementation, efficient_attention
from ..backends.batch_positions import note_stop, pad_tokens, running_batch
from ..backends.devices import model_device
from ..backends.experts import is_moe_site
from ..backends.memory import estimate_forward, memory_budget, plan_chunks
from ..backends.models import check_model
from ..backends.sites import (
    is_feature_site,
    site_hook,
    site_label,
    site_layers,
    site_transforms,
    site_width,
)
from ..backends.tl_compat import quiet_cache_rename
from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from .prompt_prefix import (
    MIN_SHARED,
    PromptPrefixes,
    attached_hooks,
    common_length,
    keep_one_position,
    prefix_status,
    within_window,
)

TOKEN_MODES = ("last", "all")
AGGREGATIONS = ("mean", "max", "any")
CRITERIA = ("gt", "abs")


@dataclass(frozen=True)
class RecordingConfig:
    """Where and how activations are read.

    hook: per-block hook suffix, read at ``blocks.{layer}.{hook}``. ``mlp.hook_post`` (default)
        is the input of W_out; in gated MLPs ``mlp.hook_pre`` is the gate pre-activation and
        ``gate`` is ``act(gate pre-activation)``; ``hook_resid_post.hook_sae_acts_post`` (or any
        SAE hook point) reads an attached SAE's features (see :mod:`tl_multineuron.backends.sites`).
    token: ``"last"`` prompt token (default) or ``"all"`` prompt tokens, reduced by
        ``aggregate``: ``mean``, ``max``, or ``any`` (the value that decides "active on any
        token" under ``criterion``: the max for ``gt``, the signed max-|a| for ``abs``).
    skip_bos: in ``all`` mode, leave the BOS position out of the aggregate (its activations are
        the same for every prompt and would make every neuron look shared).
    layers: the layers to record (default: all; for an SAE site, those with an SAE there).
    """

    hook: str = "mlp.hook_post"
    token: str = "last"
    aggregate: str = "mean"
    criterion: str = "gt"
    skip_bos: bool = True
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.token not in TOKEN_MODES:
            raise MultiNeuronError(f"token mode {self.token!r}; expected one of {TOKEN_MODES}")
        if self.aggregate not in AGGREGATIONS:
            raise MultiNeuronError(
                f"aggregation {self.aggregate!r}; expected one of {AGGREGATIONS}"
            )
        if self.criterion not in CRITERIA:
            raise MultiNeuronError(f"criterion {self.criterion!r}; expected one of {CRITERIA}")
        if not self.hook or self.hook.startswith("blocks."):
            raise MultiNeuronError(
                f"hook {self.hook!r}: give the per-block suffix (e.g. 'mlp.hook_post'), not a "
                "full hook name"
            )
        if self.layers is not None:
            layers = tuple(int(x) for x in self.layers)
            if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
                raise MultiNeuronError(
                    f"layers {self.layers!r}: expected distinct non-negative layer indices"
                )
            object.__setattr__(self, "layers", tuple(sorted(layers)))

    def layer_indices(self, model: Any) -> list[int]:
        n = model.cfg.n_layers
        if self.layers is None:
            return site_layers(model, self.hook)
        layers = list(self.layers)
        bad = [x for x in layers if x >= n]
        if bad:
            raise MultiNeuronError(f"layer(s) {bad} do not exist: the model has {n} layers")
        return layers

    def hook_names(self, model: Any) -> list[str]:
        return [f"blocks.{x}.{site_hook(self.hook)}" for x in self.layer_indices(model)]

    @property
    def site(self) -> str:
        """The activation site, recorded with every result."""
        return site_label(self.hook)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RecordingConfig:
        d = dict(d)
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids and the real length of every row."""

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    has_bos: bool

    @property
    def last_index(self) -> Int[Tensor, " batch"]:
        return self.lengths - 1

    def mask(self, skip_bos: bool = False) -> Tensor:
        pos = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        m = pos[None, :] < self.lengths[:, None]
        if skip_bos and self.has_bos:
            m = m & (pos[None, :] > 0)
            m = m | (self.lengths[:, None] == 1) & (pos[None, :] == 0)  # keep a lone BOS
        return m

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.tokens.to(device), self.lengths.to(device), self.has_bos)


def get_tokenizer(model: Any) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise MultiNeuronError(
            "model has no tokenizer; pass one to TransformerBridge.boot_native(cfg, tokenizer=...) "
            "or set model.tokenizer"
        )
    return tok


def encode(model: Any, text: str, prepend_bos: bool | None = None) -> list[int]:
    """Token ids of ``text`` as the model would see it (BOS prepended as TransformerLens does)."""
    tok = get_tokenizer(model)
    ids = list(tok(text, add_special_tokens=True)["input_ids"])
    bos = getattr(tok, "bos_token_id", None)
    if prepend_bos is None:
        prepend_bos = bool(getattr(model.cfg, "default_prepend_bos", True))
    if prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if not prepend_bos and bos is not None and ids and ids[0] == bos:
        ids = ids[1:]
    return ids


def encode_prompts(
    model: Any,
    prompts: Sequence[str],
    labels: Sequence[str] | None = None,
    prepend_bos: bool | None = None,
) -> list[list[int]]:
    """Token ids of each prompt, with a clear error (naming the prompt by its label) for a
    prompt that tokenizes to nothing or is longer than the model's context."""
    labels = labels or [f"prompt {i}" for i in range(len(prompts))]
    ids = [encode(model, p, prepend_bos) for p in prompts]
    n_ctx = getattr(model.cfg, "n_ctx", None)
    for lab, row in zip(labels, ids, strict=True):
        if not row:
            raise MultiNeuronError(f"{lab}: the prompt tokenizes to nothing")
        if n_ctx and len(row) > n_ctx:
            raise MultiNeuronError(
                f"{lab}: the prompt is {len(row)} tokens, longer than the model's context ({n_ctx})"
            )
    return ids


def pad_ids(model: Any, ids: Sequence[Sequence[int]], side: str = "right") -> tuple[Tensor, Tensor]:
    """Pad token id lists into ``[batch, pos]`` tokens and a 0/1 attention mask."""
    pad = getattr(get_tokenizer(model), "pad_token_id", None) or 0
    tokens, mask = pad_tokens(ids, int(pad), left=side != "right")
    return tokens, mask.long()


def answer_ids(
    model: Any,
    prompt: str,
    answer: str,
    label: str = "answer",
    prompt_ids: Sequence[int] | None = None,
) -> list[int]:
    """The tokens of ``answer`` as it continues ``prompt`` (the prompt's own tokens are kept;
    where the tokenizer merges across the boundary, the answer is tokenized on its own)."""
    p = list(prompt_ids) if prompt_ids is not None else encode(model, prompt)
    full = encode(model, prompt + answer)
    if len(full) > len(p) and full[: len(p)] == p:
        return full[len(p) :]
    ids = encode(model, answer, prepend_bos=False)
    if not ids:
        raise MultiNeuronError(f"{label}: the answer {answer!r} tokenizes to nothing")
    return ids


def answer_first_token(model: Any, prompt: str, answer: str, label: str = "answer") -> int:
    """The first token of ``answer`` as it continues ``prompt`` (split at the boundary)."""
    return answer_ids(model, prompt, answer, label)[0]


def _keep_last_position(x: Tensor, hook: Any) -> Tensor:
    return x[:, -1:]


def last_position_unembed_hooks(model: Any, rows: str = "all") -> list[tuple[str, Any]]:
    """A hook that unembeds only the last position (when the model has ``unembed.hook_in``):
    callers that read only ``logits[:, -1]`` skip the vocab-sized product elsewhere. ``rows``:
    ``"all"`` (every row's last position) or ``"one"`` (:func:`keep_one_position`)."""
    if rows not in ("all", "one"):
        raise MultiNeuronError(f"rows {rows!r}; expected 'all' or 'one'")
    hook = _keep_last_position if rows == "all" else keep_one_position
    return (
        [("unembed.hook_in", hook)] if "unembed.hook_in" in getattr(model, "hook_dict", {}) else []
    )


def token_batch(model: Any, ids: Sequence[Sequence[int]]) -> TokenBatch:
    """Right-pad encoded prompts into a :class:`TokenBatch`."""
    tokens, _ = pad_ids(model, ids, "right")
    lengths = torch.tensor([len(r) for r in ids], dtype=torch.long)
    bos = getattr(get_tokenizer(model), "bos_token_id", None)
    has_bos = bos is not None and all(r[0] == bos for r in ids)
    return TokenBatch(tokens, lengths, has_bos)


def tokenize(
    model: Any,
    prompts: Sequence[str],
    labels: Sequence[str] | None = None,
    prepend_bos: bool | None = None,
) -> TokenBatch:
    """Tokenize and right-pad ``prompts``; ``labels`` name each prompt in error messages."""
    return token_batch(model, encode_prompts(model, prompts, labels, prepend_bos))


class StopForward(Exception):
    """Raised by the last recording hook: nothing after it is needed."""


def _reduce(act: Tensor, batch: TokenBatch, cfg: RecordingConfig) -> Tensor:
    rows = torch.arange(act.shape[0], device=act.device)
    if cfg.token == "last":
        return act[rows, batch.last_index]
    mask = batch.mask(cfg.skip_bos)[..., None]
    if cfg.aggregate == "mean":
        return (act * mask).sum(1) / mask.sum(1).clamp_min(1)
    if cfg.aggregate == "max" or cfg.criterion == "gt":
        return act.masked_fill(~mask, float("-inf")).max(1).values
    # any under |a| > t: the signed value of largest magnitude
    idx = act.abs().masked_fill(~mask, -1.0).argmax(1, keepdim=True)
    return act.gather(1, idx).squeeze(1)


def record(
    model: Any, batch: TokenBatch, config: RecordingConfig | None = None, attention: str = "auto"
) -> Float[Tensor, "batch layer d_mlp"]:
    """Reduced activations of every recorded layer for a token batch (on the model's device).

    ``attention``: ``"auto"`` runs SDPA where the model allows it (see
    :mod:`tl_multineuron.backends.attention`), ``"eager"`` the bridge's own attention, ``"sdpa"``
    insists.
    """
    return record_with(model, batch, config, (), attention)[0]


def record_with(
    model: Any,
    batch: TokenBatch,
    config: RecordingConfig | None = None,
    extra_hooks: Sequence[str] = (),
    attention: str = "auto",
    *,
    prefix: tuple[PromptPrefixes, Int[Tensor, " batch"]] | None = None,
) -> tuple[Float[Tensor, "batch layer d_mlp"], dict[str, Float[Tensor, "batch width"]]]:
    """:func:`record`, plus the values of ``extra_hooks`` (full ``blocks.{l}.…`` names) at each
    row's last real token, in the same forward pass.

    ``prefix``: ``(prefixes, index)``, row ``i`` of ``batch`` continues prefix ``index[i]``
    (``batch`` holds only the remainders; see :mod:`tl_multineuron.sharing.prompt_prefix`);
    ``token="last"`` only."""
    config = config or RecordingConfig()
    if prefix is not None and config.token != "last":
        raise MultiNeuronError(
            f"a shared prefix needs token mode 'last', not {config.token!r}: the aggregate "
            "would leave out the prefix's positions"
        )
    names = config.hook_names(model)
    layers = config.layer_indices(model)
    extra = list(dict.fromkeys(extra_hooks))
    check_model(model, names + extra)
    transforms = site_transforms(model, config.hook, layers)
    stop_layer = max([layers[-1], *(_block_of(h) for h in extra)])
    device = model_device(model)
    batch = batch.to(device)
    d_mlp = site_width(model, config.hook, layers)
    unit = "d_sae={}] (SAE features)" if is_feature_site(config.hook) else "d_mlp={}] (MLP neurons)"
    flattened = is_moe_site(config.hook)
    out: Tensor | None = None
    extras: dict[str, Tensor] = {}
    fired: list[bool] = [False] * (len(names) + len(extra))
    on_device: dict[torch.device, tuple[TokenBatch, Tensor]] = {}

    def local(dev: torch.device) -> tuple[TokenBatch, Tensor]:
        """The batch's positions on ``dev``: a model split over devices (``device_map``)
        reduces each layer where it lives, and only the reduced rows move."""
        if dev not in on_device:
            b = batch.to(dev)
            on_device[dev] = (b, torch.arange(b.tokens.shape[0], device=dev))
        return on_device[dev]

    def done(k: int) -> None:
        fired[k] = True
        if all(fired):
            raise StopForward

    def make_hook(k: int):
        def hook(act: Tensor, hook: Any) -> None:
            nonlocal out
            if act.ndim == 2 and flattened:  # MoE sites: [batch * pos, units]
                act = act.reshape(batch.tokens.shape[0], -1, act.shape[-1])
            if act.ndim != 3 or act.shape[-1] != d_mlp:
                raise MultiNeuronError(
                    f"hook {names[k]!r} gives activations of shape {tuple(act.shape)}; a site "
                    f"needs a unit dimension: expected [batch, pos, {unit.format(d_mlp)}; sites "
                    "are MLP hooks (mlp.hook_post, mlp.hook_pre, gate) or SAE features"
                )
            if transforms is not None and config.token == "all":
                act = transforms[k](act)
            red = _reduce(act, local(act.device)[0], config)
            if transforms is not None and config.token != "all":
                red = transforms[k](red)
            if out is None:  # on the first recorded layer's device
                out = torch.empty(
                    act.shape[0], len(names), d_mlp, dtype=red.dtype, device=red.device
                )
            out[:, k] = red.to(out.device)
            done(k)
            return None

        return hook

    def make_extra(k: int, name: str):
        def hook(act: Tensor, hook: Any) -> None:
            b, rows = local(act.device)
            extras[name] = act[rows, b.last_index].clone()
            done(len(names) + k)
            return None

        return hook

    hooks = [(n, make_hook(k)) for k, n in enumerate(names)]
    hooks += [(n, make_extra(k, n)) for k, n in enumerate(extra)]
    width = batch.tokens.shape[1]
    kwargs: dict[str, Any] = {}
    if prefix is not None:
        kwargs = prefix[0].inputs(prefix[1], batch.mask())
    with torch.inference_mode():
        try:
            with (
                efficient_attention(model, attention),
                running_batch(batch.lengths, width, "right"),
                model.hooks(fwd_hooks=hooks),
                quiet_cache_rename(),
            ):
                model(batch.tokens, **kwargs)
        except StopForward:
            note_stop(stop_layer)
    if out is None or not all(fired):
        missing = [n for n, f in zip(names + extra, fired, strict=True) if not f]
        raise MultiNeuronError(f"hooks {missing} never fired during the forward pass")
    return out, extras


def _block_of(hook_name: str) -> int:
    parts = hook_name.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise MultiNeuronError(
            f"extra hook {hook_name!r}: expected a per-block name 'blocks.<layer>.<hook>'"
        )
    return int(parts[1])


def iter_dataset(
    model: Any,
    dataset: ParallelDataset,
    config: RecordingConfig | None = None,
    batch_size: int = 8,
    start: int = 0,
    progress: bool = False,
    *,
    max_memory: int | str | None = None,
    attention: str = "auto",
    share_prefixes: bool = True,
) -> Iterator[tuple[int, Float[Tensor, "item lang layer d_mlp"]]]:
    """Yield ``(first_item_index, activations)`` for consecutive item batches (see
    :func:`iter_dataset_with`)."""
    for s, acts, _ in iter_dataset_with(
        model,
        dataset,
        config,
        batch_size,
        start,
        progress,
        max_memory=max_memory,
        attention=attention,
        share_prefixes=share_prefixes,
    ):
        yield s, acts


def iter_dataset_with(
    model: Any,
    dataset: ParallelDataset,
    config: RecordingConfig | None = None,
    batch_size: int = 8,
    start: int = 0,
    progress: bool = False,
    *,
    extra_hooks: Sequence[str] = (),
    max_memory: int | str | None = None,
    attention: str = "auto",
    share_prefixes: bool = True,
) -> Iterator[tuple[int, Float[Tensor, "item lang layer d_mlp"], dict[str, Tensor]]]:
    """Yield ``(first_item_index, activations)`` for consecutive item batches.

    ``batch_size`` counts items; each forward pass holds ``batch_size * n_languages`` prompts.
    Before a batch runs, its peak memory is estimated (:mod:`tl_multineuron.backends.memory`); a
    batch that would not fit the budget (``max_memory``, else 80% of the device's free memory) is
    split, and a prompt that cannot fit on its own is an error naming its item and language.

    ``share_prefixes``: where a language's prompts share a prefix (few-shot demonstrations), it
    runs once and every batch runs only the prompts' remainders against its KV cache (the rule
    and where it applies: :mod:`tl_multineuron.sharing.prompt_prefix`); ``False`` runs whole
    prompts always.
    """
    if batch_size < 1:
        raise MultiNeuronError(f"batch_size must be >= 1, got {batch_size}")
    if start < 0 or start > len(dataset):
        raise MultiNeuronError(f"start {start} is outside the dataset's {len(dataset)} items")
    config = config or RecordingConfig()
    langs = dataset.languages
    impl = attention_implementation(model, attention)
    budget = memory_budget(model_device(model), max_memory)
    shared = language_prefixes(model, dataset, config) if share_prefixes else {}
    prefixes: PromptPrefixes | None = None  # every language's prefix, one pass, on first use

    def estimate(n: int, width: int):
        return estimate_forward(model, n, width, impl)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), initial=start, desc="items", unit="item")
    try:
        for s in range(start, len(dataset), batch_size):
            items = dataset.items[s : s + batch_size]
            prompts = [it.prompts[x] for it in items for x in langs]
            labels = [f"item {it.item_id!r}, language {x!r}" for it in items for x in langs]
            ids = encode_prompts(model, prompts, labels)
            row_lang = [x for _ in items for x in langs]
            on = [r for r, x in enumerate(row_lang) if x in shared] if shared else []
            if on and prefixes is None and not attached_hooks(model):
                first = [ids[langs.index(x)][: shared[x]] for x in shared]
                prefixes = PromptPrefixes.compute(model, first, impl)
            own = max((len(ids[r]) - shared[row_lang[r]] for r in on), default=0)
            if (
                prefixes is None
                or attached_hooks(model)
                or not within_window(model, prefixes.width + own)
            ):
                on = []
            groups: list[tuple[list[int], PromptPrefixes | None, list[int]]] = []
            plain = sorted(set(range(len(ids))) - set(on))
            if plain:
                groups.append((plain, None, []))
            if on:
                order = list(shared)
                groups.append((on, prefixes, [order.index(row_lang[r]) for r in on]))
            acts, extras = _record_groups(
                model, ids, labels, groups, config, extra_hooks, impl, estimate, budget
            )
            extras = {h: v.reshape(len(items), len(langs), -1) for h, v in extras.items()}
            yield s, acts.reshape(len(items), len(langs), *acts.shape[1:]), extras
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()


def _record_groups(
    model: Any,
    ids: list[list[int]],
    labels: list[str],
    groups: list[tuple[list[int], PromptPrefixes | None, list[int]]],
    config: RecordingConfig,
    extra_hooks: Sequence[str],
    impl: str,
    estimate: Any,
    budget: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Record the rows of each group (whole prompts, or remainders that continue the prefixes
    the group's index names) in memory-planned chunks; the results in the rows' original
    order."""
    parts, order = [], []
    for rows, prefixes, index in groups:
        cut = prefixes.lengths[index].tolist() if prefixes is not None else [0] * len(rows)
        own = [ids[r][c:] for r, c in zip(rows, cut, strict=True)]
        full = [len(ids[r]) for r in rows]  # memory: planned as whole prompts (an upper bound)
        for a, b in plan_chunks(full, estimate, budget, [labels[r] for r in rows]):
            at = (prefixes, torch.tensor(index[a:b])) if prefixes is not None else None
            batch = token_batch(model, own[a:b])
            parts.append(record_with(model, batch, config, extra_hooks, impl, prefix=at))
        order += rows
    where = torch.empty(len(order), dtype=torch.long)
    where[torch.tensor(order)] = torch.arange(len(order))
    acts = torch.cat([p[0] for p in parts])
    extras = {h: torch.cat([p[1][h] for p in parts]) for h in extra_hooks}
    if order != sorted(order):
        acts = acts[where.to(acts.device)]
        extras = {h: v[where.to(v.device)] for h, v in extras.items()}
    return acts, extras


def language_prefixes(
    model: Any, dataset: ParallelDataset, config: RecordingConfig | None = None
) -> dict[str, int]:
    """Per language, the length of the prompt prefix that recording passes over ``dataset``
    compute once (:mod:`~tl_multineuron.sharing.prompt_prefix`); languages without one, and
    every language where the shared path does not apply, are left out."""
    config = config or RecordingConfig()
    if not prefix_status(model, config.token)[0] or len(dataset) < 2:
        return {}
    out = {}
    for x in dataset.languages:  # streamed: one prompt's tokens held at a time
        common: list[int] | None = None
        shortest = 0
        for it in dataset.items:
            row = encode(model, it.prompts[x])
            if common is None:
                common, shortest = row, len(row)
                continue
            common = common[: common_length([common, row])]
            shortest = min(shortest, len(row))
        n = min(len(common or []), shortest - 1)
        if n >= MIN_SHARED:
            out[x] = n
    return out
