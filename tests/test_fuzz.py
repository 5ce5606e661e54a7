"""Bad input, fuzzed: loaders (hypothesis) and CLI arguments. Every failure is a
MultiNeuronError / exit code 2 naming the input, and existing results are left untouched."""

import hashlib
import json
import os
import string

import pytest
from helpers import tiny_hf_dir, toy_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_multineuron import MultiNeuronError
from tl_multineuron.cli import main
from tl_multineuron.data.datasets import load_parallel

LANGS = ("en", "de", "fr")
MUTATIONS = (
    "none",
    "bom",
    "crlf",
    "long_prompt",
    "drop_column",
    "non_json_line",
    "latin1",
    "empty_prompt",
    "duplicate_id",
    "missing_language",
)
LOADS = {"none", "bom", "crlf", "long_prompt"}  # these must load; the rest must be refused


def _rows(n, text):
    return [
        {"id": f"i{k}", "lang": x, "prompt": f"{text} {k} {x}", "answer": f"a{k}"}
        for k in range(n)
        for x in LANGS
    ]


def _write(path, rows, fmt, mutation):
    if mutation == "empty_prompt":
        rows[0]["prompt"] = "   "
    if mutation == "latin1":
        rows[0]["prompt"] += " café"  # é is one byte (0xe9) in latin-1: not UTF-8
    if mutation == "long_prompt":
        rows[0]["prompt"] = "x" * 20_000
    if mutation == "missing_language":
        rows = [r for r in rows if not (r["id"] == "i0" and r["lang"] == "fr")]
    if mutation == "drop_column":
        rows = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    if mutation == "duplicate_id":
        rows = rows + [dict(rows[0])]
    if fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        if mutation == "non_json_line":
            lines.insert(1, "{not json")
    else:
        sep = "," if fmt == "csv" else "\t"
        cols = list(rows[0])
        lines = [sep.join(cols)] + [sep.join(str(r.get(c, "")) for c in cols) for r in rows]
        if mutation == "non_json_line":  # the CSV analogue: a row with too few fields
            lines.insert(1, "lonely")
    text = ("\r\n" if mutation == "crlf" else "\n").join(lines) + "\n"
    data = text.encode("latin-1", "replace") if mutation == "latin1" else text.encode()
    if mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(["jsonl", "csv", "tsv"]),
    mutation=st.sampled_from(MUTATIONS),
    n=st.integers(1, 4),
    text=st.text(alphabet=string.ascii_letters + "äöüéß日本", min_size=1, max_size=12).filter(
        lambda t: t.strip()
    ),
)
def test_loaders_load_or_name_the_problem(tmp_path, fmt, mutation, n, text):
    path = tmp_path / f"data.{fmt}"
    if mutation == "missing_language":
        n = max(n, 2)  # with one item, a file of two languages is simply that
    _write(path, _rows(n, text), fmt, mutation)
    if mutation in LOADS:
        ds = load_parallel(path)
        assert len(ds) == n and ds.languages == LANGS
        assert ds.items[0].prompts["en"].startswith("x" if mutation == "long_prompt" else text)
        return
    with pytest.raises(MultiNeuronError) as e:
        load_parallel(path)
    msg = str(e.value)
    expected = {
        "drop_column": "prompt",
        "non_json_line": "line 2" if fmt == "jsonl" else "row",
        "latin1": "not UTF-8",
        "empty_prompt": "'en' is empty",
        "duplicate_id": "two rows for language",
        "missing_language": "'fr'",
    }[mutation]
    assert expected in msg, msg


# -- CLI arguments -------------------------------------------------------------------------
def _digest(directory):
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != ".tl-multineuron.lock":
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzcli")
    hf = tiny_hf_dir(root / "model")
    data = root / "d.jsonl"
    toy_dataset(3, LANGS).to_jsonl(data)
    out = root / "results"
    base = ["analyze", "--model", hf, "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    (root / "afile").write_text("not a directory")
    (root / "notmodel").mkdir()
    return hf, str(data), out, root


BAD_ARGS = [
    (["--threshold", "nan"], "threshold nan"),
    (["--threshold", "inf"], "threshold inf"),
    (["--threshold", "0,0.1,0"], "repeats"),
    (["--threshold", "zero"], "--threshold 'zero'"),
    (["--batch-size", "0"], "batch_size"),
    (["--hook", "mlp.hook_nope"], "hook"),
    (["--layers", "9"], "layer"),
    (["--layers", "one"], "--layers 'one'"),
    (["--device", "tpu:7"], "device 'tpu:7'"),
    (["--dtype", "float8"], "dtype 'float8'"),
    (["--max-memory", "lots"], "memory size 'lots'"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0"),
    (["--limit", "0"], "--limit 0"),
]


@pytest.mark.parametrize("extra, named", BAD_ARGS)
@pytest.mark.parametrize("resume", [False, True])
def test_bad_cli_arguments_exit_2_and_leave_results(existing, capsys, extra, named, resume):
    hf, data, out, _ = existing
    before = _digest(out)
    args = ["analyze", "--model", hf, "--data", data, "--out", str(out), "--no-progress", *extra]
    assert main(args + (["--resume"] if resume else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("tl-multineuron: error:") and "Traceback" not in err
    if "different configuration" not in err:  # refused before the run's identity check
        assert named in err, err
    assert _digest(out) == before


@pytest.mark.parametrize("case", ["model_dir", "model_file", "out_file", "read_only"])
def test_bad_paths(existing, capsys, case, tmp_path):
    hf, data, out, root = existing
    model, target = hf, tmp_path / "new"
    if case == "model_dir":
        model = str(root / "notmodel")
    elif case == "model_file":
        model = data
    elif case == "out_file":
        target = root / "afile"
    elif os.geteuid() == 0:  # root writes into chmod-read-only directories; /proc is not
        target = type(tmp_path)("/proc/tl-multineuron-results")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        target = ro / "sub"
    args = ["analyze", "--model", model, "--data", data, "--out", str(target), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(model if case.startswith("model") else target) in err, err
