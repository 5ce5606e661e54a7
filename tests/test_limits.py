"""Long inputs, devices, empty selections, friendly files (fast tier, tiny models)."""

import json
import re

import pytest
import torch
from helpers import tiny_hf_dir, tiny_model, toy_dataset

import tl_multineuron as tlm
from tl_multineuron import MultiNeuronError
from tl_multineuron.backends.attention import attention_implementation, efficient_attention
from tl_multineuron.backends.devices import check_placement, resolve_device
from tl_multineuron.backends.memory import (
    EAGER_MASK_BYTES,
    MemoryEstimate,
    estimate_forward,
    memory_budget,
    parse_memory,
    plan_chunks,
)
from tl_multineuron.backends.tl_compat import EAGER_SCORE_BYTES
from tl_multineuron.cli import main
from tl_multineuron.data.datasets import load_parallel
from tl_multineuron.sharing.recording import iter_dataset


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    path = tiny_hf_dir(tmp_path_factory.mktemp("limits") / "model")
    return path, tlm.load_model(path)


# -- memory estimate and plans ------------------------------------------------------------------
def test_parse_memory():
    assert parse_memory("4GiB") == parse_memory("4G") == 4 * 2**30
    assert parse_memory("4GB") == 4 * 10**9
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory(1000) == 1000 and parse_memory("1.5K") == 1536
    for bad in ("", "lots", "-1G", "4 parsecs", "0"):
        with pytest.raises(MultiNeuronError, match="memory size"):
            parse_memory(bad)


def test_estimate_by_hand():
    model = tiny_model("gelu")  # d_model 16, d_head 4, 4 heads, d_mlp 24, fp32
    e = estimate_forward(model, 2, 10, "eager")
    per_token = 3 * 24 + 2 * 16 + (4 + 2 * 4) * 4 + 2 * 4
    assert e.linear == 2 * 10 * per_token * 4
    assert e.quadratic == 2 * 10 * 10 * (EAGER_SCORE_BYTES["bridge"] * 4 + EAGER_MASK_BYTES)
    assert e.total == e.linear + e.quadratic
    # the attention term grows with the square of the length, the rest linearly
    e2 = estimate_forward(model, 2, 20, "eager")
    assert e2.quadratic == 4 * e.quadratic and e2.linear == 2 * e.linear
    # SDPA materializes no scores for one unmasked prompt
    assert estimate_forward(model, 1, 20, "sdpa").quadratic == 0
    with pytest.raises(MultiNeuronError, match="attention"):
        estimate_forward(model, 1, 5, "flash")


def test_plan_chunks_splits_and_refuses():
    def est(n, width):  # 1 unit per token of padded width
        return MemoryEstimate(n, width, "eager", n * width, 0)

    labels = [f"p{i}" for i in range(5)]
    assert plan_chunks([3, 3, 3, 3, 3], est, 100, labels) == [(0, 5)]
    assert plan_chunks([3, 3, 3, 3, 3], est, 6, labels) == [(0, 2), (2, 4), (4, 5)]
    # a long prompt widens its chunk: it goes alone
    assert plan_chunks([2, 2, 9, 2, 2], est, 9, labels) == [(0, 2), (2, 3), (3, 5)]
    with pytest.raises(MultiNeuronError, match=r"p2: the prompt is 12 tokens.*12 B.*budget is 9 B"):
        plan_chunks([2, 2, 12, 2], est, 9, labels[:4])


def test_budget_is_capped_by_free_memory():
    assert memory_budget("cpu", "1KiB") == 1024
    free = memory_budget("cpu")
    assert 0 < free < memory_budget("cpu", "100TiB") + 1


def test_split_batches_equal_one_batch():
    model = tiny_model("gated")
    ds = toy_dataset(4, ("en", "de", "fr"))
    whole = torch.cat([a for _, a in iter_dataset(model, ds, batch_size=4)])
    # a budget that fits one prompt at a time
    one = estimate_forward(model, 1, 30, "eager").total
    split = torch.cat([a for _, a in iter_dataset(model, ds, batch_size=4, max_memory=one)])
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def test_prompt_that_cannot_fit_names_item_before_running(tmp_path):
    model = tiny_model("gelu", n_ctx=64)
    items = list(toy_dataset(3, ("en", "de")).items)
    long = tlm.ParallelItem("long", {"en": "x" * 60, "de": "short"}, {}, "toy")
    ds = tlm.ParallelDataset((*items, long), ("en", "de"), "toy")
    budget = estimate_forward(model, 1, 30, "eager").total
    calls = []
    it = iter_dataset(model, ds, batch_size=1, max_memory=budget)
    for s, _ in zip(range(3), it, strict=False):
        calls.append(s)
    with pytest.raises(MultiNeuronError, match=r"item 'long', language 'en': the prompt is 61 "):
        next(it)
    assert calls == [0, 1, 2]  # the batches before it ran and were yielded


def test_cli_refusal_keeps_finished_batches(tmp_path, capsys):
    hf = tiny_hf_dir(tmp_path / "model")
    items = list(toy_dataset(4, ("en", "de")).items)
    long = tlm.ParallelItem("long", {"en": "y" * 100, "de": "kurz"}, {}, "toy")
    data = tmp_path / "d.jsonl"
    tlm.ParallelDataset((*items, long), ("en", "de"), "toy").to_jsonl(data)
    out = tmp_path / "run"
    args = ["analyze", "--model", hf, "--data", str(data), "--out", str(out)]
    args += ["--batch-size", "2", "--no-progress", "--max-memory", "100KiB"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "item 'long', language 'en'" in err and "101 tokens" in err and "budget" in err
    assert tlm.SharingStats.load(out / "stats.pt").n_items == 4  # finished results kept


# -- efficient attention -------------------------------------------------------------------
def test_sdpa_equals_eager_on_hf_model(hf_model):
    _, model = hf_model
    assert attention_implementation(model) == "sdpa"
    batch = tlm.tokenize(model, ["the dog and the cat " * 3, "short one"])
    eager = tlm.record(model, batch, attention="eager")
    sdpa = tlm.record(model, batch, attention="sdpa")
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-5)
    # restored afterwards: the bridge's own attention runs again, hooks on patterns fire
    fired = []
    name = "blocks.0.attn.hook_pattern"
    model.run_with_hooks(batch.tokens, fwd_hooks=[(name, lambda a, hook: fired.append(1))])
    assert fired


def test_sdpa_falls_back_or_refuses():
    native = tiny_model("gated")
    assert attention_implementation(native) == "eager"
    with pytest.raises(MultiNeuronError, match="native TransformerLens"):
        attention_implementation(native, "sdpa")


def test_pattern_hook_forces_eager(hf_model):
    _, model = hf_model
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, hook: None)]):
        assert attention_implementation(model) == "eager"
        with pytest.raises(MultiNeuronError, match="pattern"), efficient_attention(model, "sdpa"):
            pass


# -- devices -------------------------------------------------------------------------------
def test_device_refused_when_missing():
    assert resolve_device(None) is None and resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(MultiNeuronError, match=r"CUDA is not usable.*available: \['cpu'\]"):
            resolve_device("cuda")
    with pytest.raises(MultiNeuronError, match="not a device name"):
        resolve_device("gpu-please")
    with pytest.raises(MultiNeuronError, match="not usable"):
        resolve_device("xpu")


def test_placement_checked():
    model = tiny_model("gelu")
    assert check_placement(model, torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(MultiNeuronError, match="asked for on 'meta'"):
        check_placement(model, torch.device("meta"))


def test_cli_device_refused_and_recorded(hf_model, tmp_path, capsys):
    hf, _ = hf_model
    data = tmp_path / "d.jsonl"
    toy_dataset(2, ("en", "de")).to_jsonl(data)
    base = ["analyze", "--model", hf, "--data", str(data), "--no-progress", "--no-views"]
    if not torch.cuda.is_available():
        assert main([*base, "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "CUDA is not usable" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists()
    assert main([*base, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    meta = tlm.SharingStats.load(tmp_path / "cpu" / "stats.pt").meta
    assert meta["device"] == "cpu" and meta["attention"] == "sdpa"


# -- empty selections ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "0"], "--limit 0"),
        (["--limit", "-3"], "--limit -3"),
        (["--languages", "en"], "at least 2 languages"),
        (["--languages", "en,xx"], "'xx'"),
        (["--items", "50:60"], r"items \[50:60\] select nothing"),
        (["--items", "3"], "START:STOP"),
    ],
)
def test_empty_selections_refused(hf_model, tmp_path, capsys, extra, message):
    hf, _ = hf_model
    data = tmp_path / "d.jsonl"
    toy_dataset(3, ("en", "de", "fr")).to_jsonl(data)
    out = tmp_path / "out"
    assert main(["analyze", "--model", hf, "--data", str(data), "--out", str(out), *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


# -- friendly files ------------------------------------------------------------------------
def test_bom_jsonl_and_csv(tmp_path):
    ds = toy_dataset(3, ("en", "de"))
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(it.to_dict()) + "\n" for it in ds).encode())
    assert load_parallel(p).fingerprint() == ds.fingerprint()
    c = tmp_path / "bom.csv"
    rows = ["id,lang,prompt,answer"] + [
        f"{it.item_id},{x},{it.prompts[x]},{it.answers[x]}" for it in ds for x in ds.languages
    ]
    c.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode())
    got = load_parallel(c)
    assert got.fingerprint() == ds.fingerprint() and got.items[0].answers == ds.items[0].answers


def test_column_aliases(tmp_path):
    c = tmp_path / "alias.csv"
    c.write_text("id,language,text,target\n1,en,hello,hi\n1,de,hallo,hi\n")
    ds = load_parallel(c)
    assert ds.languages == ("en", "de") and ds.items[0].answers["de"] == "hi"
    t = tmp_path / "alias.tsv"
    t.write_text("item_id\tlanguage\tprompt\n7\ten\ta\n7\tfr\tb\n")
    assert load_parallel(t).items[0].item_id == "7"
    j = tmp_path / "alias.jsonl"
    j.write_text(
        '{"id": 1, "language": "en", "text": "a"}\n{"id": 1, "language": "de", "text": "b"}\n'
    )
    assert load_parallel(j).items[0].prompts["de"] == "b"


def test_unknown_layout_names_expected_and_found(tmp_path):
    c = tmp_path / "bad.csv"
    c.write_text("key,locale,sentence\n1,en,hello\n")
    with pytest.raises(MultiNeuronError) as e:
        load_parallel(c)
    msg = str(e.value)
    assert "'lang' or 'language'" in msg and "'prompt' or 'text'" in msg
    assert "['key', 'locale', 'sentence']" in msg
    both = tmp_path / "both.csv"
    both.write_text("id,lang,prompt,text\n1,en,a,b\n")
    with pytest.raises(MultiNeuronError, match="both mean 'prompt'"):
        load_parallel(both)


def test_non_utf8_named(tmp_path):
    c = tmp_path / "latin.csv"
    c.write_bytes("id,lang,prompt\n1,fr,caf\xe9\n".encode("latin-1"))
    with pytest.raises(MultiNeuronError, match=r"not UTF-8 \(byte 0xe9 .* line 2\)"):
        load_parallel(c)
