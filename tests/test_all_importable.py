import importlib

import tl_multineuron


def test_every_public_name_imports():
    assert len(tl_multineuron.__all__) == len(set(tl_multineuron.__all__))
    for name in tl_multineuron.__all__:
        assert getattr(tl_multineuron, name) is not None, name


def test_every_module_imports():
    import pkgutil

    for m in pkgutil.iter_modules(tl_multineuron.__path__):
        importlib.import_module(f"tl_multineuron.{m.name}")
