"""The two TransformerLens lines, and everything that differs between them, in one place.

* TL 3.x (from 3.9): ``HookedTransformer``, what SAELens installs (``transformer-lens<4``);
* TL 4.x (from 4.3): ``TransformerBridge``, which wraps the HF model.

Both expose the hook names the library reads (``blocks.{l}.mlp.hook_pre`` / ``hook_post``,
``blocks.{l}.hook_resid_post``, ``unembed.hook_in``), the modules the norm path probes
(``blocks[l].ln2_post``, ``ln_final``) and the stacked weights (``W_out``, ``W_U``), so the rest of
the library is line-agnostic. What differs lives here:

* building a model from HF weights without weight processing (:func:`build_model`);
* the wrapped HF module (:func:`hf_model`): only a bridge has one; it serves HF generation, the
  prefix KV cache of the one-pass scorer and the HF config (logit softcap, memory estimates);
* cached greedy generation with an explicit attention mask (:func:`generate_tokens`);
* the name under which transformers hands attention its KV cache (:func:`align_cache_kwarg`);
* the attention components whose implementation (eager / SDPA) can be switched
  (:func:`bridge_attention_modules`) and the memory an eager attention pass holds;
* the supported version range (:func:`check_tl_version`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import tempfile
import warnings
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..errors import MultiNeuronError

#: The oldest supported release of each line.
SUPPORTED_LINES = {3: (3, 9), 4: (4, 3)}
SUPPORTED_TEXT = (
    "transformer-lens 3.x from 3.9 (HookedTransformer) or 4.x from 4.3 (TransformerBridge)"
)


def tl_version() -> str:
    """The installed TransformerLens version."""
    try:
        return version("transformer-lens")
    except PackageNotFoundError as e:
        raise MultiNeuronError(
            f"TransformerLens is not installed; supported: {SUPPORTED_TEXT}"
        ) from e


def check_tl_version(installed: str | None = None) -> int:
    """The installed line (3 or 4); an error naming the installed and the supported versions
    when it is outside the range."""
    v = installed if installed is not None else tl_version()
    m = re.match(r"(\d+)\.(\d+)", v)
    parsed = (int(m.group(1)), int(m.group(2))) if m else None
    line = parsed[0] if parsed else None
    if parsed is None or line not in SUPPORTED_LINES or parsed < SUPPORTED_LINES[line]:
        raise MultiNeuronError(
            f"transformer-lens {v} is installed; tl_multineuron supports {SUPPORTED_TEXT}"
        )
    return line


@functools.lru_cache(maxsize=1)
def tl_line() -> int:
    """The installed line, checked once per process."""
    return check_tl_version()


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a TL 4.x ``TransformerBridge`` (it wraps a HF model)."""
    return any(c.__name__ == "TransformerBridge" for c in type(model).__mro__)


def hf_model(model: Any) -> Any | None:
    """The HF module a bridge wraps; ``None`` for a ``HookedTransformer`` (its weights were
    converted) or any other model."""
    return getattr(model, "original_model", None) if is_bridge(model) else None


def bridge_attention_modules(model: Any) -> list[Any]:
    """A bridge's attention components (whose HF attention implementation
    :mod:`tl_multineuron.backends.attention` switches); none for a ``HookedTransformer``, which
    computes attention itself, eagerly."""
    if not is_bridge(model):
        return []
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    return [m for m in model.modules() if isinstance(m, AttentionBridge)]


def cache_kwarg_alias(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook of an attention bridge: the cache that transformers passes as
    ``cache=`` is handed on as ``past_key_values=``, the name the bridge reads (a bridge
    that delegates to the HF module passes it on under the old name, which transformers
    still accepts and renames)."""
    if "cache" in kwargs and "past_key_values" not in kwargs:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None


def takes_cache_kwarg(component: Any) -> bool:
    """Whether the HF attention module wrapped by ``component`` takes its KV cache as
    ``cache`` (transformers >= 5.24) rather than ``past_key_values``."""
    forward = getattr(getattr(component, "original_component", None), "forward", None)
    if forward is None:
        return False
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return "cache" in params and "past_key_values" not in params


@contextlib.contextmanager
def quiet_cache_rename() -> Iterator[None]:
    """Silence transformers' deprecation notice for ``past_key_values=`` inside a cached pass.

    TransformerLens 4.3's bridge hands the KV cache to the HF model as ``past_key_values``;
    transformers 5.24 accepts it and renames it to ``cache`` (with a FutureWarning a user
    cannot act on). Whether the cache really works is checked, not assumed:
    ``scoring.prefix_cache_status`` probes it and ``align_cache_kwarg`` makes the attention
    extend it; ``scripts/test_newest.sh`` runs those checks on the newest transformers."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`past_key_values` is deprecated", category=FutureWarning
        )
        yield


def align_cache_kwarg(model: Any) -> int:
    """Make a bridge's attention extend the KV cache under transformers >= 5.24.

    transformers 5.24 renamed the decoder layers' ``past_key_values`` argument to ``cache``;
    TransformerLens 4.3's attention bridges read only ``past_key_values``, so a cache passed
    in is never extended: the prefix cache of the one-pass scorer comes back empty and a
    cached generation step attends to nothing before it. A forward pre-hook on each affected
    attention bridge renames the argument. Idempotent; returns how many bridges it aligned
    now (0 on a ``HookedTransformer`` or where the names already agree)."""
    n = 0
    for m in bridge_attention_modules(model):
        if getattr(m, "_tlmn_cache_alias", None) is None and takes_cache_kwarg(m):
            m._tlmn_cache_alias = m.register_forward_pre_hook(cache_kwarg_alias, with_kwargs=True)
            n += 1
    return n


def hf_config(model: Any) -> Any | None:
    """The wrapped HF model's config, if there is one."""
    return getattr(hf_model(model), "config", None)


def text_config(model: Any) -> Any | None:
    """The config of the wrapped HF model's text decoder: the config itself for a causal LM,
    its ``text_config`` for a multimodal class (Gemma 3 4B-27B load as
    ``Gemma3ForConditionalGeneration``, whose window and soft-caps live there)."""
    cfg = hf_config(model)
    if cfg is None:
        return None
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def sliding_window(model: Any) -> int | None:
    """The smallest sliding attention window of ``model`` (``None``: no layer has one), read
    wherever the config keeps it: the HF text config (top level or ``text_config``) or TL's
    ``cfg.window_size``."""
    cfg = text_config(model)
    window = getattr(cfg, "sliding_window", None) if cfg is not None else None
    if window:
        types = getattr(cfg, "layer_types", None)
        uses = getattr(cfg, "use_sliding_window", True)
        if (types is None and uses is not False) or any("sliding" in str(t) for t in types or ()):
            return int(window)
    w = getattr(getattr(model, "cfg", None), "window_size", None)
    return int(w) if w else None


def model_label(model: Any) -> str:
    """How errors name a model: its architecture (the HF class) and TL model name."""
    cfg = hf_config(model)
    arch = (getattr(cfg, "architectures", None) or [None])[0] if cfg is not None else None
    name = getattr(getattr(model, "cfg", None), "model_name", None)
    parts = [p for p in (arch, name) if p]
    return " / ".join(str(p) for p in parts) or type(model).__name__


#: Live bytes per head and (query, key) pair of an eager attention pass: HF's eager attention
#: under a bridge keeps ~2.5 float32 copies of the scores, HookedTransformer ~3.75 (scores,
#: masked scores, pattern; fitted to the measured peak of Gemma 3 270M at 2,048 and 4,096
#: tokens: 0.32 GB and 1.45 GB).
EAGER_SCORE_BYTES = {"bridge": 10, "hooked": 15}


def eager_score_bytes(model: Any) -> int:
    """Live bytes per head and (query, key) pair of one eager attention pass of ``model``."""
    return EAGER_SCORE_BYTES["bridge" if is_bridge(model) or tl_line() == 4 else "hooked"]


def native_kind() -> str:
    """The model class :func:`build_model` returns on the installed line."""
    return "TransformerBridge" if tl_line() == 4 else "HookedTransformer"


@contextlib.contextmanager
def _kept_in_place(hf: Any) -> Iterator[None]:
    """A model dispatched over several devices stays where it is: the bridge moves a
    pre-loaded model to one device, so its ``to`` does nothing meanwhile."""
    placed = getattr(hf, "hf_device_map", None)
    if not placed or len({str(v) for v in placed.values()}) < 2:
        yield
        return
    own = hf.__dict__.get("to")  # accelerate's guard, where it set one
    hf.to = lambda *a, **k: hf
    try:
        yield
    finally:
        if own is not None:
            hf.to = own
        else:
            del hf.to


def build_model(
    name: str,
    hf: Any,
    tokenizer: Any,
    device: str | None,
    dtype: torch.dtype,
    local_dir: str | Path | None = None,
    with_saes: bool = False,
) -> Any:
    """The installed line's native model over the HF weights ``hf``, without weight processing
    (no folding or centring: activations and ``W_out`` / ``W_U`` are the model's own).

    ``name`` is the architecture name TL knows; on TL 3.x a model outside TL's official list is
    converted from its HF config (``local_dir``'s ``config.json``, or ``hf.config``).
    ``with_saes``: SAELens' ``HookedSAETransformer`` (TL 3.x), which can carry SAEs.
    """
    hf = hf.to(dtype)
    if with_saes and tl_line() != 3:
        raise MultiNeuronError(
            f"SAEs need SAELens' HookedSAETransformer, which needs transformer-lens 3.x; "
            f"{tl_version()} is installed (pip install sae-lens installs the 3.x line)"
        )
    if tl_line() == 4:
        from transformer_lens.model_bridge import TransformerBridge

        with _kept_in_place(hf), _no_installs():
            model = TransformerBridge.boot_transformers(
                name, hf_model=hf, tokenizer=tokenizer, device=device, dtype=dtype
            )
        align_cache_kwarg(model)
        _width_from_weights(model)
    else:
        from transformer_lens.loading_from_pretrained import get_official_model_name

        cls = _hooked_class(with_saes)
        _drop_gguf_marker(hf)

        try:
            official = get_official_model_name(name)
        except ValueError:
            official = None
        if official is not None:
            model = cls.from_pretrained_no_processing(
                official, hf_model=hf, tokenizer=tokenizer, device=device or "cpu", dtype=dtype
            )
        elif local_dir is not None and (Path(local_dir) / "config.json").exists():
            model = _hooked_from_dir(cls, Path(local_dir), hf, tokenizer, device or "cpu", dtype)
        else:  # a GGUF file or a hub id TL does not list: its config, written out for TL
            with tempfile.TemporaryDirectory(prefix="tlmn-config-") as tmp:
                hf.config.save_pretrained(tmp)
                model = _hooked_from_dir(cls, Path(tmp), hf, tokenizer, device or "cpu", dtype)
        if official is None:
            model.cfg.model_name = name  # not the directory TL read the config from
        _transposed_storage(model)
    model.eval()
    return model


@contextlib.contextmanager
def _no_installs() -> Iterator[None]:
    """Boot a bridge without letting TransformerLens install packages: TL 4.3, finding no
    processor for a multimodal checkpoint (Gemma 3 4B-27B), runs ``pip install torchvision``,
    which replaces the user's torch. Here it is told torchvision is missing instead; the text
    model loads without a processor, which the library never uses."""
    try:
        from transformer_lens.model_bridge.sources.transformers import helpers
    except ImportError:  # another TL layout: nothing to guard
        yield
        return
    own = getattr(helpers, "_ensure_torchvision", None)
    if own is None:
        yield
        return

    def importable_only() -> bool:
        import importlib.util

        return importlib.util.find_spec("torchvision") is not None

    helpers._ensure_torchvision = importable_only
    try:
        yield
    finally:
        helpers._ensure_torchvision = own


def _width_from_weights(model: Any) -> None:
    """TL 4.3's OPT adapter sets ``cfg.d_mlp = 4 * d_model`` whatever the checkpoint's
    ``ffn_dim``; the MLP's own weights decide (``W_out`` is ``[layer, d_mlp, d_model]``)."""
    try:
        W_out = model.W_out
    except Exception:  # noqa: BLE001 - no stacked MLP weights (MoE): sites check it later
        return
    shaped = W_out.ndim == 3 and W_out.shape[-1] == model.cfg.d_model
    if shaped and int(W_out.shape[1]) != int(model.cfg.d_mlp):
        model.cfg.d_mlp = int(W_out.shape[1])


def _drop_gguf_marker(hf: Any) -> None:
    """transformers dequantizes a GGUF file on load (every weight is a plain float tensor) but
    keeps ``quantization_config = {'quant_method': 'gguf'}``, which TL 3.x refuses. The marker
    is dropped only when every parameter is indeed floating point."""
    qc = getattr(hf.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if str(getattr(method, "value", method)).lower() != "gguf":
        return
    if all(p.is_floating_point() for p in hf.parameters()):
        delattr(hf.config, "quantization_config")


def _transposed_storage(model: Any) -> None:
    """TL 3.9 multiplies by ``W.T.contiguous()`` in ``Unembed`` and ``GatedMLP``: a copy of
    each weight on every forward (``W_U`` alone is 670 MB and ~0.85 s per call on Gemma 3's
    262k vocabulary, measured). Storing those weights as the transpose of a contiguous tensor
    makes the call a no-op; values and the matmul's memory layout are unchanged."""
    owners = [("unembed", getattr(model, "unembed", None), ("W_U",))]
    owners += [
        (f"blocks.{i}.mlp", b.mlp, ("W_in", "W_gate", "W_out")) for i, b in enumerate(model.blocks)
    ]
    for _, module, names in owners:
        for name in names:
            w = getattr(module, name, None)
            if isinstance(w, torch.nn.Parameter) and w.ndim == 2 and w.is_contiguous():
                flipped = w.detach().T.contiguous().T
                setattr(module, name, torch.nn.Parameter(flipped, requires_grad=w.requires_grad))


def _hooked_class(with_saes: bool) -> Any:
    if with_saes:
        from .saes import require_saelens

        return require_saelens().HookedSAETransformer
    from transformer_lens import HookedTransformer

    return HookedTransformer


def _hooked_from_dir(
    cls: Any, path: Path, hf: Any, tokenizer: Any, device: str, dtype: torch.dtype
) -> Any:
    """A HookedTransformer for an architecture TL 3.x converts but whose name it does not list
    (e.g. SmolLM2, a Llama): config read from the directory, weights from ``hf``, unprocessed."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import (
        convert_hf_model_config,
        get_pretrained_state_dict,
    )

    try:
        cfg = HookedTransformerConfig(
            **convert_hf_model_config(str(path)), device=device, dtype=dtype
        )
        state = get_pretrained_state_dict(str(path), cfg, hf_model=hf, dtype=dtype)
    except (ValueError, NotImplementedError, KeyError, AttributeError) as e:
        raise MultiNeuronError(
            f"TransformerLens {tl_version()} cannot convert the model in {str(path)!r}: {e}"
        ) from e
    model = cls(cfg, tokenizer=tokenizer)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.to(device)


def generate_tokens(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"] | Int[Tensor, "batch pos"],
    max_new_tokens: int,
) -> Int[Tensor, "batch new"]:
    """Greedy, KV-cached continuations of left-padded ``tokens`` (``mask``: real positions),
    stopping at EOS: ``[batch, pos + new]`` token ids. Hooks active on the model apply at every
    step (after the prompt a step runs only the new position)."""
    if is_bridge(model):
        align_cache_kwarg(model)
        with quiet_cache_rename():
            return model.generate(
                tokens,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                return_type="tokens",
                verbose=False,
                attention_mask=mask,
                stop_at_eos=True,
            )
    return cached_greedy(model, tokens, mask.long(), max_new_tokens)


def cached_greedy(model: Any, tokens: Tensor, mask: Tensor, n: int) -> Tensor:
    """HookedTransformer: an explicit-mask loop over TL's own KV cache (its ``generate``
    re-derives the mask from pad ids, which is wrong where the pad id is also a real token)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    tok = getattr(model, "tokenizer", None)
    eos = getattr(tok, "eos_token_id", None)
    B = tokens.shape[0]
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, B)
    out = [tokens]
    done = torch.zeros(B, dtype=torch.bool, device=tokens.device)
    logits = model(tokens, attention_mask=mask, past_kv_cache=cache)
    for step in range(n):
        nxt = logits[:, -1].argmax(-1)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done |= nxt == eos
        out.append(nxt[:, None])
        if step == n - 1 or bool(done.all()):
            break
        logits = model(
            nxt[:, None], attention_mask=torch.ones_like(nxt[:, None]), past_kv_cache=cache
        )
    return torch.cat(out, 1)
