"""A model split over two devices, emulated on the CPU (tests/virtual_devices.py): every index
and mask the library builds must live on the device of the activation it indexes. Fails (a
MixedDevices error) where one is made on the model's first device instead."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_gemma_dir, tiny_llama_dir, toy_dataset
from virtual_devices import FAKE, MixedDevices, SecondDevice

import tl_multineuron as tlm
from tl_multineuron.experiments.evaluation import generate_greedy

PROMPTS = ["dog cat 1 ", "Hund 22 ab", "chien chat soleil 3", "x y"]
ANSWERS = ["a", "de2", "b", "yz"]


@pytest.fixture(scope="module", params=["llama", "gemma"])
def model(request, tmp_path_factory):
    make = {"llama": tiny_llama_dir, "gemma": tiny_gemma_dir}[request.param]
    return tlm.load_model(make(tmp_path_factory.mktemp(request.param) / "m"))


def _split(model, fn):
    mode = SecondDevice()
    handles = mode.split(model, 1)
    try:
        with mode:
            out = fn()
    finally:
        for h in handles:
            h.remove()
    assert mode.ops > 0
    return out


def test_the_emulation_catches_a_mask_on_the_wrong_device():
    mode = SecondDevice()
    with mode:
        act = torch.ones(2, 3).to(FAKE)
        assert act.device == FAKE
        with pytest.raises(MixedDevices):
            torch.where(torch.ones(2, 3, dtype=torch.bool), act, 0.0)
        ok = torch.where(torch.ones(2, 3, dtype=torch.bool).to(act.device), act, 0.0)
        assert ok.device == FAKE and ok.cpu().device == torch.device("cpu")


def test_scores_recording_and_generation_on_a_split_model(model):
    rows = tlm.answer_rows(model, PROMPTS, ANSWERS)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(model.cfg.n_layers, model.cfg.d_mlp, generator=g) < 0.3
    rows_masks = torch.rand(len(rows), *mask.shape, generator=g) < 0.3
    edits = [
        None,
        lambda b: tlm.deactivate(tlm.NeuronSet(mask)),
        lambda b: tlm.amplify(tlm.NeuronSet(mask), 2.0),
        lambda b: tlm.Intervention(rows_masks[list(b)], "zero"),
    ]
    for cache in ("auto", "none"):
        torch.manual_seed(0)
        want = tlm.score_answers(model, rows, edits, cache=cache)
        torch.manual_seed(0)
        got = _split(model, lambda cache=cache: tlm.score_answers(model, rows, edits, cache=cache))
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            torch.testing.assert_close(a.logprob, b.logprob, atol=1e-5, rtol=0, msg=f"{k} {cache}")
    ds = toy_dataset(4, ("en", "de"))
    cfg = tlm.AnalysisConfig(thresholds=(0.0,))
    whole = tlm.analyze(model, ds, cfg).stats
    split = _split(model, lambda: tlm.analyze(model, ds, cfg).stats)
    assert whole.equals(split)
    iv = tlm.amplify(tlm.NeuronSet(mask), 2.0)

    def gen():
        with tlm.apply(model, iv):
            return generate_greedy(model, PROMPTS, max_new_tokens=3)

    assert _split(model, gen) == gen()
