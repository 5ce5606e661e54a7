"""Vocabulary-blocked answer metrics against the whole-vocabulary path: the same log-probs,
argmax and exact ranks, with ties, soft-caps, biases and masked tokens; the fallbacks."""

import types

import pytest
import torch
from helpers import tiny_llama_dir, tiny_model

from tl_multineuron import load_model
from tl_multineuron.experiments import answer_metrics as am


class Unembed(torch.nn.Module):
    def __init__(self, W, b, fn=None):
        super().__init__()
        self.W, self.b, self.fn = W, b, fn

    def forward(self, h):
        z = h @ self.W + self.b
        return z if self.fn is None else self.fn(z)


class Fake(torch.nn.Module):
    """A HookedTransformer-shaped stand-in: ``W_U``, ``b_U``, ``unembed`` and a soft-cap."""

    def __init__(self, W, b, cap=0.0, fn=None):
        super().__init__()
        self.W_U, self.b_U = W, b
        self.unembed = Unembed(W, b, fn)
        self.cfg = types.SimpleNamespace(output_logits_soft_cap=cap)


def both(model, h, gold, first, monkeypatch):
    monkeypatch.setattr(am, "BLOCK", 7)  # several blocks and a partial one
    monkeypatch.setattr(am, "ROWS", 5)
    assert am.linear_unembedding(model) is not None
    got = am.answer_metrics(model, h, gold, first)
    want = am._full(model, h, gold, first, 1024)
    return got, want


def check(got, want, atol=1e-5):
    torch.testing.assert_close(got[0], want[0], atol=atol, rtol=0)
    for g, w in zip(got[1:], want[1:], strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("cap", [0.0, 3.0])
def test_blocked_metrics_equal_the_full_path_with_ties(cap, monkeypatch):
    g = torch.Generator().manual_seed(0)
    d, V, P = 8, 45, 13
    W = torch.randn(d, V, generator=g)
    W[:, 30:40] = W[:, 3:4]  # ten tokens tied with token 3, in other blocks
    b = torch.randn(V, generator=g)
    b[30:40] = b[3]
    b[7:14] = -torch.inf  # a whole block masked
    model = Fake(W, b, cap)
    h = torch.randn(P, d, generator=g) * (30 if cap else 1)  # the cap saturates: more ties
    gold = torch.randint(14, V, (P,), generator=g)
    gold[:4] = 3  # tied with tokens of later blocks
    gold[4] = 9  # a masked gold: log-prob -inf, every unmasked token above it
    first = torch.rand(P, generator=g) < 0.7
    first[:4] = True
    got, want = both(model, h, gold, first, monkeypatch)
    check(got, want)
    assert (want[2][first] > 0).any() and not want[2][~first].any()


@pytest.mark.parametrize("kind", ["native", "llama"])
def test_blocked_metrics_on_tiny_models(kind, tmp_path, monkeypatch):
    model = (
        tiny_model("gated", seed=4)
        if kind == "native"
        else load_model(tiny_llama_dir(tmp_path / "m"))
    )
    g = torch.Generator().manual_seed(1)
    P = 40
    h = torch.randn(P, model.cfg.d_model, generator=g) * 3
    gold = torch.randint(0, model.cfg.d_vocab, (P,), generator=g)
    first = torch.rand(P, generator=g) < 0.5
    got, want = both(model, h, gold, first, monkeypatch)
    check(got, want)


def test_fallbacks_to_the_full_path():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(4, 9, generator=g), torch.zeros(9)
    assert am.linear_unembedding(Fake(W, b))[1] is None  # a zero bias is dropped
    assert am.linear_unembedding(Fake(W.half(), b.half())) is None  # half precision
    assert am.linear_unembedding(Fake(W, b, fn=torch.relu)) is None  # not h @ W_U + b_U
    hooked = Fake(W, b)
    hooked.unembed.register_forward_hook(lambda m, i, o: o * 2)
    assert am.linear_unembedding(hooked) is None
    odd = Fake(W, b, fn=lambda z: z**3)
    odd.cfg.output_logits_soft_cap = 0.0
    assert am.linear_unembedding(odd) is None


# -- numerics (issue 46): each of these failed before the fix it names ------------------------
@pytest.mark.parametrize("cap", [7.3, 0.0])
def test_float64_ranks_never_count_the_gold_above_itself(cap, monkeypatch):
    """A float64 model with a soft-cap or a scale that is no power of two: the gold's own logit,
    transformed in float64 and rounded to float32, must fall inside its band (it was
    transformed after a float32 rounding, and the band was float64-narrow)."""
    g = torch.Generator().manual_seed(3)
    d, V, P = 16, 40, 400
    W = torch.randn(d, V, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    fn = None if cap else (lambda z: z * 0.7 / 3.1)  # a logit scale, as Granite's
    model = Fake(W, b, cap)
    if fn is not None:  # applied after the unembedding, as a bridge's adapter does
        monkeypatch.setattr(am, "logit_transform", lambda m: fn)
        monkeypatch.setattr(am, "logit_slope", lambda m: 0.7 / 3.1)
    assert am.linear_unembedding(model) is not None  # the vocabulary-blocked path
    h = torch.randn(P, d, generator=g, dtype=torch.float64) * 4
    gold = torch.randint(0, V, (P,), generator=g)
    first = torch.ones(P, dtype=torch.bool)
    monkeypatch.setattr(am, "BLOCK", 7)
    got = am.answer_metrics(model, h, gold, first)
    z = h @ W + b
    z = (z if fn is None and not cap else (fn or (lambda x: torch.tanh(x / cap) * cap))(z)).float()
    want_rank = (z > z.gather(1, gold[:, None])).sum(-1)
    assert torch.equal(got[2], want_rank)


def test_reduced_precision_matmul_takes_the_full_path():
    """With float32 matmuls allowed to round inputs (TF32, bfloat16: precision 'high' or
    'medium') the rank band's error bound does not hold: the whole-vocabulary path runs."""
    g = torch.Generator().manual_seed(0)
    model = Fake(torch.randn(4, 9, generator=g), torch.randn(9, generator=g))
    assert am.linear_unembedding(model) is not None
    assert am.metrics_path(model) == "vocabulary-blocked"
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert am.linear_unembedding(model) is None
        assert am.metrics_path(model).startswith("whole-vocabulary")
    finally:
        torch.set_float32_matmul_precision(old)


def test_a_slightly_nonlinear_or_biased_unembedding_is_not_taken_for_linear():
    """The probe's tolerance is a GEMM's rounding bound, not 1e-3 of the largest logit."""
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(64, 50, generator=g), torch.randn(50, generator=g)
    assert am.linear_unembedding(Fake(W, b)) is not None
    hidden = Fake(W, b, fn=lambda z: z + 1e-4)  # a bias W_U / b_U do not show
    assert am.linear_unembedding(hidden) is None
    curved = Fake(W, b, fn=lambda z: z + 1e-5 * z**2)
    assert am.linear_unembedding(curved) is None


def test_a_masked_gold_scores_minus_infinity():
    """A gold the model can never produce (its logit -inf, here through a hook on the
    unembedding): the row's log-prob is -inf (it was -1.8e308, a finite number)."""
    from tl_multineuron.experiments.scoring import AnswerRows, score_answers

    model = tiny_model("gated", seed=4)
    rows = AnswerRows(((1, 5, 6), (1, 7, 8)), ((9, 3), (4,)), ("item 0 en", "item 0 de"))

    def mask(module, args, out):
        out[..., 3] = -torch.inf
        return out

    handle = model.unembed.register_forward_hook(mask)
    try:
        s = score_answers(model, rows)[0]
    finally:
        handle.remove()
    assert s.logprob[0].item() == -torch.inf  # its second token is masked
    assert torch.isfinite(s.logprob[1]) and s.token_logprobs[0, 1].item() == -torch.inf


def test_a_gold_outside_the_vocabulary_is_an_error_naming_the_row(tmp_path):
    from tl_multineuron import MultiNeuronError
    from tl_multineuron.experiments.scoring import AnswerRows, score_answers

    model = tiny_model("gated", seed=4)
    V = model.cfg.d_vocab
    rows = AnswerRows(((1, 5, 6), (1, 7, 8)), ((9,), (V + 3, 2)), ("item 0 en", "item 0 de"))
    with pytest.raises(MultiNeuronError, match=rf"item 0 de.*{V + 3}"):
        score_answers(model, rows)
