"""Models split over devices: a device map under the bridge, on this CPU with the layers split
over two map entries; results equal the unsplit model's; bad maps are named."""

import pytest
import torch
from helpers import tiny_llama_dir, toy_dataset

from tl_multineuron.backends.models import load_model
from tl_multineuron.backends.placement import layer_device_map, parse_device_map
from tl_multineuron.cli import main
from tl_multineuron.errors import MultiNeuronError
from tl_multineuron.sharing.analysis import AnalysisConfig, analyze
from tl_multineuron.sharing.statistics import TENSOR_FIELDS


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("placement") / "llama")


def test_layer_split_map(llama):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(llama)
    dm = layer_device_map(hf, ["cpu", "cpu"])
    assert dm["model.layers.0"] == dm["model.layers.1"] == "cpu"
    assert {"model.embed_tokens", "model.norm"} <= set(dm)
    assert not any(k.startswith("model.layers.0.") for k in dm)  # whole blocks, not pieces
    with pytest.raises(MultiNeuronError, match="3 devices for 2 layers"):
        layer_device_map(hf, ["cpu"] * 3)
    assert parse_device_map("auto") == "auto"
    assert parse_device_map("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_device_map('{"model": "cpu"}') == {"model": "cpu"}
    with pytest.raises(MultiNeuronError, match="not valid JSON"):
        parse_device_map("{model: cpu")


def test_split_model_records_like_the_whole(llama):
    """Layers 0 and 1 placed by two map entries (both the CPU here): the model is dispatched
    as mapped and its statistics equal the unsplit model's to the bit."""
    ds = toy_dataset(6, ("en", "de", "fr"))
    cfg = AnalysisConfig(thresholds=(0.0, 0.1), batch_size=3)
    whole = analyze(load_model(llama), ds, cfg).stats
    for dm in (
        "auto",
        ["cpu", "cpu"],
        {
            "model.embed_tokens": "cpu",
            "model.layers.0": "cpu",
            "model.layers.1": "cpu",
            "model.norm": "cpu",
            "lm_head": "cpu",
        },
    ):
        model = load_model(llama, device_map=dm)
        placed = model.original_model.hf_device_map
        assert set(map(str, placed.values())) == {"cpu"}
        if dm != "auto":
            assert placed["model.layers.0"] == placed["model.layers.1"] == "cpu"
        split = analyze(model, ds, cfg).stats
        for name in TENSOR_FIELDS:
            assert torch.equal(getattr(whole, name), getattr(split, name)), name


def test_bad_maps_are_named(llama, tmp_path, capsys):
    with pytest.raises(MultiNeuronError, match=r"entry 'model.layers.1'.*cuda:7"):
        load_model(llama, device_map={"model": "cpu", "model.layers.1": "cuda:7"})
    with pytest.raises(MultiNeuronError, match="'model.layer.1', which is not a module"):
        load_model(llama, device_map={"model": "cpu", "model.layer.1": "cpu"})
    with pytest.raises(MultiNeuronError, match="places no module holding parameter 'lm_head"):
        load_model(llama, device_map={"model": "cpu"})
    with pytest.raises(MultiNeuronError, match="'disk' offload is not supported"):
        load_model(llama, device_map={"model": "cpu", "lm_head": "disk"})
    with pytest.raises(MultiNeuronError, match="a device or a device map, not both"):
        load_model(llama, device="cpu", device_map="auto")
    data = tmp_path / "d.jsonl"
    toy_dataset(3, ("en", "de")).to_jsonl(data)
    argv = ["analyze", "--model", llama, "--data", str(data), "--out", str(tmp_path / "o")]
    if not torch.cuda.is_available():
        assert main([*argv, "--device-map", "cuda:0,cuda:1", "--no-progress"]) == 2
        assert "CUDA is not usable" in capsys.readouterr().err
    assert main([*argv, "--device-map", "cpu,cpu", "--no-progress", "--no-views"]) == 0


def test_a_device_map_that_splits_a_layer_is_refused(llama):
    """A layer's MLP on another device than the rest of the layer is named before loading."""
    from transformers import AutoModelForCausalLM

    from tl_multineuron.backends.placement import check_whole_layers

    hf = AutoModelForCausalLM.from_pretrained(llama)
    whole = {"model.layers.0": "cuda:0", "model.layers.1": "cuda:1", "model.norm": "cuda:1"}
    check_whole_layers(hf, whole)  # whole layers on two devices: fine
    with pytest.raises(MultiNeuronError, match=r"splits decoder layer 'model.layers.0'.*place"):
        check_whole_layers(hf, {**whole, "model.layers.0.mlp": "cuda:1"})
    with pytest.raises(MultiNeuronError, match="LlamaForCausalLM"):
        check_whole_layers(
            hf, {"model.layers.1.self_attn": "cuda:0", "model.layers.1.mlp": "cuda:1"}
        )
