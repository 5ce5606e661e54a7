"""The tested-versions lock, the drift line, and the KV-cache argument alias (fast tier)."""

import os

import pytest
import torch

from tl_multineuron import cli
from tl_multineuron.backends import versions
from tl_multineuron.backends.tl_compat import cache_kwarg_alias, takes_cache_kwarg

LOCK = """\
# comment
accelerate==1.15.0
    # via tl_multineuron (pyproject.toml)
torch==2.13.0+cpu
Transformer_Lens[extra]==4.3.0 ; python_version >= "3.10"
transformers==5.24.0  \\
    --hash=sha256:abc
pip==26.3
"""


def test_parse_lock_reads_names_and_versions():
    got = versions.parse_lock(LOCK)
    assert got == {
        "accelerate": "1.15.0",
        "torch": "2.13.0",  # the local label is not part of the tested version
        "transformer-lens": "4.3.0",
        "transformers": "5.24.0",
        "pip": "26.3",
    }


@pytest.mark.parametrize("lock", ["tl4", "tl3"])
def test_shipped_locks_pin_the_stack(lock):
    got = versions.tested_versions(lock)
    assert got["torch"] == "2.13.0"
    assert got["transformer-lens"].startswith("4." if lock == "tl4" else "3.")
    assert "transformers" in got and "jaxtyping" in got
    if lock == "tl3":
        assert "sae-lens" in got


@pytest.mark.skipif(
    os.environ.get("TLMN_OPEN_RANGES") == "1", reason="the open-range venv differs on purpose"
)
def test_this_venv_is_the_tested_lock():
    """The tests run in what scripts/bootstrap*.sh installs: the lock of the installed line."""
    assert versions.version_drift() == []
    assert versions.drift_line() is None


def test_drift_names_the_stack_first(monkeypatch):
    fake = {"torch": "0.0.1", "zzz-not-installed": "1.0", "numpy": "0.0.1"}
    monkeypatch.setattr(versions, "tested_versions", lambda lock=None: fake)
    diff = versions.version_drift()
    assert [d[0] for d in diff] == ["torch", "numpy"]
    assert diff[0][1] == torch.__version__.split("+")[0] and diff[0][2] == "0.0.1"
    line = versions.drift_line(limit=1)
    assert line.startswith("note: this environment differs from the tested versions")
    assert "torch" in line and "(tested 0.0.1)" in line and "and 1 more" in line


def test_long_command_names_the_drift_first(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(versions, "drift_line", lambda: "note: drift X")
    rc = cli.main(["analyze", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err[0] == "note: drift X" and "does not exist" in err[1]
    cli.main(["tasks"])  # a short command says nothing of versions
    assert "drift" not in capsys.readouterr().err


def test_versions_line_names_the_stack():
    line = versions.versions_line()
    assert line.startswith("versions: torch ") and "transformers " in line
    assert "transformer-lens " in line


class _Attn(torch.nn.Module):
    """Stands for a TL attention bridge: it reads the cache as ``past_key_values``."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x, **kwargs):
        self.seen = kwargs
        return x


def test_cache_alias_renames_the_new_argument_only():
    m = _Attn()
    h = m.register_forward_pre_hook(cache_kwarg_alias, with_kwargs=True)
    cache = object()
    m(torch.zeros(1), cache=cache, position_ids=3)
    assert m.seen == {"past_key_values": cache, "position_ids": 3}
    m(torch.zeros(1), past_key_values=cache)  # the old name passes unchanged
    assert m.seen == {"past_key_values": cache}
    m(torch.zeros(1))
    assert m.seen == {}
    h.remove()


def test_takes_cache_kwarg_reads_the_wrapped_signature():
    class New(torch.nn.Module):
        def forward(self, hidden_states, cache=None, **kw):
            return hidden_states

    class Old(torch.nn.Module):
        def forward(self, hidden_states, past_key_values=None, **kw):
            return hidden_states

    class Bridge:
        def __init__(self, hf):
            self.original_component = hf

    assert takes_cache_kwarg(Bridge(New()))
    assert not takes_cache_kwarg(Bridge(Old()))
    assert not takes_cache_kwarg(object())
