"""The package imports under both TransformerLens lines (marked tl3: the TL 3.x tier runs it
too)."""

import importlib

import pytest

import tl_multineuron

pytestmark = pytest.mark.tl3


def test_every_public_name_imports():
    assert len(tl_multineuron.__all__) == len(set(tl_multineuron.__all__))
    for name in tl_multineuron.__all__:
        assert getattr(tl_multineuron, name) is not None, name


def test_every_module_imports():
    import pkgutil

    for m in pkgutil.iter_modules(tl_multineuron.__path__):
        importlib.import_module(f"tl_multineuron.{m.name}")


def test_installed_line_is_supported_and_named():
    from tl_multineuron.tl_compat import SUPPORTED_LINES, native_kind, tl_line

    assert tl_line() in SUPPORTED_LINES
    assert native_kind() == ("TransformerBridge" if tl_line() == 4 else "HookedTransformer")
