"""A run's floor: per-token FLOPs against the HF model's own weights, positions a scope-all
condition computes with shared prefixes by hand, the ledger's table."""

import pandas as pd
import pytest
import torch
from families import build_family, decoder_layers

import tl_multineuron as tlm
from tl_multineuron.experiments.cost import (
    CostLedger,
    ModelFlops,
    gemm_rate,
    model_flops,
    scored_positions,
)
from tl_multineuron.experiments.scoring import AnswerRows


def _routed_weights(layer, top_k: int, n_experts: int) -> int:
    """A decoder layer's weights one token meets: every matrix but the experts', whose
    weights count ``top_k / n_experts`` (the router and a shared expert left out)."""
    total = 0
    for name, p in layer.named_parameters():
        if p.dim() < 2 or "norm" in name or name.split("mlp.")[-1] == "gate.weight":
            continue
        if "shared_expert" in name:
            continue
        total += p.numel() * (top_k / n_experts if "experts" in name else 1)
    return int(total)


@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma3", "phi3", "mixtral"])
def test_forward_flops_are_twice_the_weights_a_token_meets(name, tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_family(name, tmp_path / name)
    model = tlm.load_model(path)
    hf = AutoModelForCausalLM.from_pretrained(path)  # HF's own modules, not the bridge's
    cfg = hf.config
    top_k = getattr(cfg, "num_experts_per_tok", 1)
    n_exp = getattr(cfg, "num_local_experts", 1)
    want = 2 * sum(_routed_weights(layer, top_k, n_exp) for layer in decoder_layers(hf))
    got = model_flops(model)
    assert got.forward == want
    assert got.unembed == 2 * cfg.hidden_size * cfg.vocab_size


def _rows(prompts, answers) -> AnswerRows:
    return AnswerRows(tuple(prompts), tuple(answers), tuple(map(str, range(len(prompts)))), 1)


def test_scored_positions_by_hand():
    demo = tuple(range(10, 30))  # 20 tokens every row shares
    # text rows: BOS as the prompt, every later token scored
    rows = _rows([(1,)] * 3, [(*demo, 40), (*demo, 41, 42), (*demo, 43, 44, 45)])
    # inputs: 21, 22, 23 tokens; shared = the common prefix (BOS + demo = 21) minus one = 20
    # forward: 20 once + remainders 1 + 2 + 3; unembedded: every input position (first = 0)
    assert scored_positions(rows) == (26, 26)
    # a row that shares nothing runs alone, all its 5 inputs scored
    rows = _rows([(1,)] * 4, [(*demo, 40), (*demo, 41, 42), (*demo, 43, 44, 45), (7,) * 5])
    assert scored_positions(rows) == (26 + 5, 26 + 5)
    # prompts of different lengths: the shared part stops before the earliest first scored
    # position (input 20 for the row whose prompt is BOS + demo), and nothing in it is scored
    rows = _rows([(1, *demo), (1, *demo, 50)], [(60, 61), (62,)])
    # inputs: 22 tokens each; common prefix 21 -> 20, firsts 20 and 21 -> shared 20
    # forward 20 + 2 + 2; scored: row 0 positions 20, 21; row 1 position 21
    assert scored_positions(rows) == (24, 3)
    # too few rows or too little shared: every row alone, its scored positions only
    rows = _rows([(1, 2, 3)], [(4, 5)])
    assert scored_positions(rows) == (4, 2)


def test_ledger_table_and_gemm_rate(native_model):
    flops = ModelFlops(forward=10.0, unembed=100.0)
    led = CostLedger(rate=1000.0, flops=flops)
    assert led.floor(50, 2) == pytest.approx(0.7)
    led.add("recording", 1.4, 50)
    led.add("matrix: none", 3.0, 100, 10)
    df = led.frame()
    assert list(df["phase"]) == ["recording", "matrix: none", "total"]
    assert df["floor_s"].tolist() == pytest.approx([0.5, 2.0, 2.5])
    assert df["ratio"].tolist() == pytest.approx([2.8, 1.5, 4.4 / 2.5])
    assert df["gflop"].iloc[-1] == pytest.approx(2500 / 1e9)
    assert CostLedger(1.0, flops).frame().empty
    rate = gemm_rate(native_model, rows=64, cols=256, repeat=1)
    assert 1e6 < rate < 1e16
    assert isinstance(df, pd.DataFrame) and torch.get_num_threads() >= 1


@pytest.fixture
def native_model():
    from helpers import tiny_model

    return tiny_model("gated", seed=1)
