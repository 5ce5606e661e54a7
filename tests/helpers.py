"""Test helpers: tiny offline TransformerBridge models and a byte tokenizer."""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from tl_multineuron import ParallelDataset, ParallelItem


def byte_tokenizer() -> Any:
    """A real HF fast tokenizer built offline: one token per byte, <bos> prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{c: i + 3 for i, c in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    global _TOK_DIR
    if _TOK_DIR is None:  # TransformerLens reloads tokenizers by path: save it to a folder
        _TOK_DIR = tempfile.mkdtemp(prefix="tlmn-bytetok-")
        PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
        ).save_pretrained(_TOK_DIR)
    return PreTrainedTokenizerFast.from_pretrained(_TOK_DIR)


_TOK_DIR: str | None = None


VOCAB = 259


def tiny_model(
    kind: str = "gelu",
    seed: int = 0,
    n_layers: int = 2,
    d_mlp: int = 24,
    d_vocab: int = VOCAB,
    n_ctx: int = 64,
) -> Any:
    """A random TransformerBridge: ``gelu`` (LayerNorm, absolute positions) or ``gated``
    (RMSNorm, rotary, gated MLP)."""
    common = dict(
        d_model=16,
        d_head=4,
        n_layers=n_layers,
        n_ctx=n_ctx,
        n_heads=4,
        d_mlp=d_mlp,
        d_vocab=d_vocab,
        seed=seed,
    )
    if kind == "gelu":
        cfg = TransformerBridgeConfig(act_fn="gelu", **common)
    elif kind == "gated":
        cfg = TransformerBridgeConfig(
            act_fn="gelu",
            gated_mlp=True,
            normalization_type="RMS",
            positional_embedding_type="rotary",
            rotary_dim=4,
            **common,
        )
    else:
        raise ValueError(kind)
    model = TransformerBridge.boot_native(cfg, tokenizer=byte_tokenizer())
    model.eval()
    return model


def toy_dataset(
    n_items: int = 5, languages=("en", "de", "fr"), answers: bool = True
) -> ParallelDataset:
    words = {
        "en": "dog cat sun",
        "de": "Hund Katze Sonne",
        "fr": "chien chat soleil",
        "ru": "собака кот",
        "ja": "犬 猫 太陽",
    }
    items = []
    for i in range(n_items):
        prompts = {x: f"{words.get(x, x)} {i} " + "ab" * (i % 3) for x in languages}
        ans = {x: f" {x}{i}" for x in languages} if answers else {}
        items.append(ParallelItem(f"it{i}", prompts, ans, "toy"))
    return ParallelDataset(tuple(items), tuple(languages), "toy")


def seeded_acts(shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def tiny_hf_dir(path, n_inner: int = 48, n_positions: int = 128) -> str:
    """Save a tiny random GPT-2 HF checkpoint with the byte tokenizer (a local HF directory in
    the same format as the hub's); ``n_positions=1024`` fits every built-in prompt in bytes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=n_inner,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return _save_tiny(GPT2LMHeadModel(cfg), path)


def tiny_llama_dir(path, intermediate: int = 48, n_positions: int = 128) -> str:
    """Save a tiny random Llama HF checkpoint (SwiGLU, RMSNorm, rotary) with the byte
    tokenizer; ``n_positions=1024`` fits every built-in prompt in bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=n_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return _save_tiny(LlamaForCausalLM(cfg), path)


def _save_tiny(model, path) -> str:
    """Save a tiny HF model with the byte tokenizer as a local HF directory."""
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return str(path)


def last_position_logprob_fn(model, prompt: str, layer: int, token: int):
    """f(x) = log p(token) with the last-position activations of ``layer`` replaced by the
    rows of ``x`` [n, d_mlp]: the function IG attributes, written out for captum."""
    from tl_multineuron.sharing.recording import encode

    ids = encode(model, prompt)
    last = len(ids) - 1

    def f(x):
        toks = torch.tensor([ids] * x.shape[0])

        def patch(act, hook):
            act = act.clone()
            act[:, last] = x
            return act

        with model.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", patch)]):
            logits = model(toks)[:, last]
        return torch.log_softmax(logits, -1)[:, token]

    return f


def tiny_gemma_dir(path) -> str:
    """A tiny random Gemma 3 HF checkpoint (post-MLP RMSNorm with ``1 + w`` gains, gated GELU
    MLP, final norm) with the byte tokenizer; norm weights are randomised so the gains matter."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=128,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    return _save_tiny(model, path)


def no_norm_model(seed: int = 0) -> Any:
    """A tiny native GELU model without any norm (GPT-2 style with norms removed)."""
    cfg = TransformerBridgeConfig(
        act_fn="gelu",
        d_model=16,
        d_head=4,
        n_layers=2,
        n_ctx=64,
        n_heads=4,
        d_mlp=24,
        d_vocab=VOCAB,
        seed=seed,
        normalization_type=None,
    )
    model = TransformerBridge.boot_native(cfg, tokenizer=byte_tokenizer())
    model.eval()
    return model


def fake_shards(stats, n: int, n_items: int, root, identity: dict) -> list:
    """``n`` shard directories of an ``n_items`` run, each holding a copy of ``stats`` with
    the shard's item count and its own fingerprint: what ``merge`` reads, for timing merges
    at a scale no test runs through a model."""
    from pathlib import Path

    from tl_multineuron.runs.directories import RunDir
    from tl_multineuron.runs.shards import Shard

    dirs = []
    for k in range(n):
        d = Path(root) / f"shard-{k}"
        rec = Shard(k, n).record(n_items, "all")
        part = stats.copy()
        part.n_items = rec["stop"] - rec["start"]
        part.meta["dataset_fingerprint"] = f"fp{k}"
        run = RunDir(d, {**identity, "dataset_fingerprint": f"fp{k}", "shard": rec})
        run.write_run({})
        part.save(d / "stats.pt")
        run.close()
        dirs.append(d)
    return dirs


def chromium() -> str | None:
    """Debian's Chromium for the browser tests (.ci/run installs it), or None."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")
