"""Tiny random models of every decoder family the architecture matrix covers, built offline.

Each family is a transformers config (2 layers, hidden 64, the byte tokenizer's vocabulary), a
fixed seed, and every norm's weights (and biases) perturbed so that a wrong norm path shows.
Sliding windows are 16 positions, so the matrix's prompts (longer than 40 tokens) cross them.

``Family.hf_layer_parts`` names, for the reference checks, the HF modules the matrix reads:
the down-projection (its input is a neuron's activation), what the MLP's output passes through
before the residual add, and the final norm. Nothing here comes from tl_multineuron.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from helpers import VOCAB, byte_tokenizer

WINDOW = 16
HIDDEN = 64
FFN = 96  # neurons per layer: differs from HIDDEN, so a residual-sized site cannot pass as one


@dataclass(frozen=True)
class Family:
    """One architecture family of the matrix."""

    name: str
    build: Callable[[], Any]  # -> a HF model (random weights, seeded)
    #: where the matrix's reference reads the model (dotted paths under a decoder layer)
    down: str = "mlp.down_proj"
    post_mlp_norm: str | None = None
    #: the HF class is multimodal: the text path is what the library analyses
    moe: bool = False
    real_weights: str = ""  # the real checkpoint verified on this family, if any
    notes: dict = field(default_factory=dict)


def _common(**kw: Any) -> dict:
    base = dict(
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    base.update(kw)
    return base


def _llama_like(cfg_cls: str, model_cls: str, **extra: Any) -> Callable[[], Any]:
    def build() -> Any:
        import transformers

        kw = dict(
            hidden_size=HIDDEN,
            intermediate_size=FFN,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
        cfg = getattr(transformers, cfg_cls)(**_common(**{**kw, **extra}))
        return getattr(transformers, model_cls)(cfg)

    return build


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(**_common(n_positions=256, n_embd=HIDDEN, n_layer=2, n_head=4, n_inner=FFN))
    )


def _bloom() -> Any:
    from transformers import BloomConfig, BloomForCausalLM

    # BLOOM's MLP is 4 x hidden wide by construction
    return BloomForCausalLM(BloomConfig(**_common(hidden_size=HIDDEN, n_layer=2, n_head=4)))


def _opt() -> Any:
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(
        OPTConfig(
            **_common(
                hidden_size=HIDDEN,
                ffn_dim=FFN,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=256,
                word_embed_proj_dim=HIDDEN,
            )
        )
    )


def _plain(cfg_cls: str, model_cls: str) -> Callable[[], Any]:
    """A family whose config takes the common sizes and no key-value heads (Phi, GPT-NeoX)."""

    def build() -> Any:
        import transformers

        cfg = getattr(transformers, cfg_cls)(
            **_common(
                hidden_size=HIDDEN,
                intermediate_size=FFN,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=256,
            )
        )
        return getattr(transformers, model_cls)(cfg)

    return build


def _gemma3_conditional() -> Any:
    """Gemma 3 4B-27B's class: the text model inside a multimodal wrapper, its window in
    ``text_config``."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    cfg = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=258
    )
    cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = 0, 1, 2
    return Gemma3ForConditionalGeneration(cfg)


_GEMMA_KW = dict(
    head_dim=16,
    sliding_window=WINDOW,
    layer_types=["sliding_attention", "full_attention"],
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("gpt2", _gpt2, down="mlp.c_proj"),
        Family("llama", _llama_like("LlamaConfig", "LlamaForCausalLM"), real_weights="SmolLM2"),
        Family(
            "mistral", _llama_like("MistralConfig", "MistralForCausalLM", sliding_window=WINDOW)
        ),
        Family(
            "qwen2",
            _llama_like(
                "Qwen2Config",
                "Qwen2ForCausalLM",
                use_sliding_window=True,
                sliding_window=WINDOW,
                max_window_layers=1,
                layer_types=["full_attention", "sliding_attention"],
            ),
        ),
        Family("qwen3", _llama_like("Qwen3Config", "Qwen3ForCausalLM", head_dim=16)),
        Family(
            "gemma2",
            _llama_like(
                "Gemma2Config",
                "Gemma2ForCausalLM",
                attn_logit_softcapping=50.0,
                final_logit_softcapping=30.0,
                **_GEMMA_KW,
            ),
            post_mlp_norm="post_feedforward_layernorm",
        ),
        Family(
            "gemma3",
            _llama_like("Gemma3TextConfig", "Gemma3ForCausalLM", **_GEMMA_KW),
            post_mlp_norm="post_feedforward_layernorm",
            real_weights="Gemma 3 270M",
        ),
        Family(
            "gemma3_conditional",
            _gemma3_conditional,
            post_mlp_norm="post_feedforward_layernorm",
        ),
        Family("bloom", _bloom, down="mlp.dense_4h_to_h"),
        Family("opt", _opt, down="fc2"),
        Family("phi", _plain("PhiConfig", "PhiForCausalLM"), down="mlp.fc2"),
        Family("phi3", _llama_like("Phi3Config", "Phi3ForCausalLM", pad_token_id=0)),
        Family("gpt_neox", _plain("GPTNeoXConfig", "GPTNeoXForCausalLM"), down="mlp.dense_4h_to_h"),
        Family(
            "olmo2",
            _llama_like("Olmo2Config", "Olmo2ForCausalLM"),
            post_mlp_norm="post_feedforward_layernorm",
        ),
        Family("stablelm", _llama_like("StableLmConfig", "StableLmForCausalLM")),
        Family(
            "granite",
            _llama_like(
                "GraniteConfig",
                "GraniteForCausalLM",
                logits_scaling=4.0,
                residual_multiplier=0.3,
                embedding_multiplier=6.0,
                attention_multiplier=0.2,
            ),
        ),
        Family("cohere", _llama_like("CohereConfig", "CohereForCausalLM", logit_scale=0.25)),
        # mixture-of-experts: no per-neuron site; experts are the units
        Family(
            "mixtral",
            _llama_like(
                "MixtralConfig",
                "MixtralForCausalLM",
                num_local_experts=4,
                num_experts_per_tok=2,
                sliding_window=None,
            ),
            moe=True,
        ),
        Family(
            "qwen2_moe",
            _llama_like(
                "Qwen2MoeConfig",
                "Qwen2MoeForCausalLM",
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                shared_expert_intermediate_size=FFN,
                decoder_sparse_step=1,
                mlp_only_layers=[],
            ),
            moe=True,
        ),
        Family(
            "qwen3_moe",
            _llama_like(
                "Qwen3MoeConfig",
                "Qwen3MoeForCausalLM",
                head_dim=16,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                decoder_sparse_step=1,
                mlp_only_layers=[],
            ),
            moe=True,
        ),
        Family(
            "olmoe",
            _llama_like("OlmoeConfig", "OlmoeForCausalLM", num_experts=4, num_experts_per_tok=2),
            moe=True,
        ),
        Family(
            "gpt_oss",
            _llama_like(
                "GptOssConfig",
                "GptOssForCausalLM",
                intermediate_size=HIDDEN,  # as in the released configs: expert width = d_model
                head_dim=16,
                num_local_experts=4,
                num_experts_per_tok=2,
                sliding_window=WINDOW,
                layer_types=["sliding_attention", "full_attention"],
            ),
            moe=True,
        ),
    ]
}


def perturb_norms(model: Any, seed: int) -> None:
    """Every norm weight and bias moved away from its initial value (so ``w`` vs ``1 + w`` and a
    dropped gain both show), deterministically."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if p.ndim == 1 and ("norm" in low or "ln" in low.split(".")[-2:][0]):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def build_family(name: str, path: Any, seed: int = 0) -> str:
    """Save family ``name``'s tiny model (seeded, norms perturbed) with the byte tokenizer as a
    local HF directory; returns the directory."""
    fam = FAMILIES[name]
    torch.manual_seed(seed)
    model = fam.build()
    perturb_norms(model, seed)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return str(path)


def decoder_layers(hf: Any) -> Any:
    """The HF model's list of decoder layers."""
    for path in ("model.language_model.layers", "model.layers", "transformer.h",
                 "model.decoder.layers", "gpt_neox.layers"):  # fmt: skip
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AttributeError(f"no decoder layers found in {type(hf).__name__}")


def final_norm(hf: Any) -> Any:
    """The HF model's final norm (before the unembedding)."""
    for path in ("model.language_model.norm", "model.norm", "transformer.ln_f",
                 "model.decoder.final_layer_norm", "gpt_neox.final_layer_norm",
                 "model.final_layernorm"):  # fmt: skip
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AttributeError(f"no final norm found in {type(hf).__name__}")


def generate_with(ref: Any, ids: list[int], hooks: list, n: int) -> list[int]:
    """HF's own greedy continuation of ``ids`` (up to EOS) with ``hooks`` registered for the
    call: ``(module, kind, fn)``, kind ``"pre"`` or ``"post"``."""
    handles = [
        m.register_forward_pre_hook(fn) if kind == "pre" else m.register_forward_hook(fn)
        for m, kind, fn in hooks
    ]
    try:
        with torch.no_grad():
            out = ref.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                               pad_token_id=0)[0, len(ids):].tolist()  # fmt: skip
    finally:
        for h in handles:
            h.remove()
    eos = ref.config.get_text_config().eos_token_id
    return out[: out.index(eos)] if eos in out else out


def sub(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module
