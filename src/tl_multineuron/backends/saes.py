"""SAE features as units: SAELens SAEs attached to a ``HookedSAETransformer``.

With an SAE attached at ``blocks.{l}.{point}``, its feature activations
``blocks.{l}.{point}.hook_sae_acts_post`` are a site like ``mlp.hook_post``: the same
categories (all-shared / partial / specific / non-activated *features*), statistics, report and
feature-level interventions (:mod:`tl_multineuron.backends.sites`). SAELens needs
TransformerLens 3.x.

    sae = "gemma-scope-2-270m-pt-res:layer_12_width_16k_l0_medium"  # Gemma Scope 2, layer 12
    model = tlm.load_model("gemma-3-270m", saes=[sae])
    site = "hook_resid_post.hook_sae_acts_post"  # = tlm.sae_site(the SAE)
    cfg = tlm.AnalysisConfig(recording=tlm.RecordingConfig(hook=site))
    stats = tlm.analyze(model, ds, cfg).stats  # [1 layer, 16,384 features]

SAELens skips an SAE whose hook point the model lacks with only a log message;
:func:`attach_sae` refuses it instead, and also an SAE whose input width differs from the
hook's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import MultiNeuronError

FEATURES = "hook_sae_acts_post"


def require_saelens() -> Any:
    try:
        import sae_lens
    except ImportError as e:
        raise MultiNeuronError(
            "SAE sites need SAELens (pip install sae-lens; it installs transformer-lens 3.x, "
            "whose HookedTransformer tl_multineuron also supports)"
        ) from e
    return sae_lens


def sae_point(sae: Any) -> str:
    """The full hook name an SAE reads (``blocks.{l}.{point}``), checked for a block."""
    name = getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name", None)
    parts = str(name).split(".")
    if not name or len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise MultiNeuronError(
            f"SAE hook name {name!r}: expected a per-block hook 'blocks.<layer>.<hook>'"
        )
    return str(name)


def sae_site(sae: Any) -> str:
    """The per-block site suffix of an SAE's features, e.g.
    ``hook_resid_post.hook_sae_acts_post``."""
    return f"{sae_point(sae).split('.', 2)[2]}.{FEATURES}"


def load_sae(spec: Any, device: str | torch.device | None = None) -> Any:
    """An SAE from a SAELens object (returned as is), a local directory saved with
    ``sae.save_model`` (``cfg.json`` inside), or ``RELEASE:SAE_ID`` from the SAELens
    pretrained registry (needs network)."""
    sae_lens = require_saelens()
    if not isinstance(spec, (str, Path)):
        return spec
    dev = str(device or "cpu")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "cfg.json").exists():
            raise MultiNeuronError(f"SAE directory {str(path)!r} has no cfg.json")
        return sae_lens.SAE.load_from_disk(str(path), device=dev)
    release, sep, sae_id = str(spec).partition(":")
    if not sep or not release or not sae_id:
        raise MultiNeuronError(
            f"SAE {str(spec)!r}: expected a directory with cfg.json or RELEASE:SAE_ID"
        )
    return sae_lens.SAE.from_pretrained(release, sae_id, device=dev)


def _hook_width(model: Any, name: str) -> int:
    tok = getattr(getattr(model, "tokenizer", None), "bos_token_id", None) or 0
    dev = next(model.parameters()).device
    with torch.inference_mode():
        _, cache = model.run_with_cache(
            torch.tensor([[tok]], device=dev), names_filter=lambda n: n == name
        )
    return int(cache[name].shape[-1])


def attach_sae(model: Any, sae: Any, use_error_term: bool = True) -> str:
    """Attach ``sae`` to a ``HookedSAETransformer`` and return its feature site.

    ``use_error_term`` (default True) adds the SAE's reconstruction error back, so the
    model's outputs are unchanged and feature edits act on top of the model's own computation;
    with False the model runs on the reconstruction (SAELens' default)."""
    require_saelens()
    if not hasattr(model, "add_sae"):
        raise MultiNeuronError(
            f"a {type(model).__name__} cannot carry SAEs: load the model as SAELens' "
            "HookedSAETransformer (load_model(..., saes=[...]) does)"
        )
    point = sae_point(sae)
    layer = int(point.split(".")[1])
    if layer >= model.cfg.n_layers or point not in model.hook_dict:
        blocks = sorted({h.split(".", 2)[2] for h in model.hook_dict if h.startswith("blocks.0.")})
        raise MultiNeuronError(
            f"the SAE's hook point {point!r} is not on the model ({model.cfg.n_layers} layers; "
            f"per-block hooks: {blocks})"
        )
    width = _hook_width(model, point)
    if int(sae.cfg.d_in) != width:
        raise MultiNeuronError(
            f"the SAE at {point!r} reads d_in={sae.cfg.d_in} values; the hook gives {width}"
        )
    model.add_sae(sae, use_error_term=use_error_term)
    if point not in getattr(model, "acts_to_saes", {}):
        raise MultiNeuronError(f"SAELens did not attach the SAE at {point!r}")
    return sae_site(sae)
