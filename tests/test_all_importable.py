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


def _package_imports() -> dict[str, set[tuple[str, str]]]:
    """Per module (dotted name inside the package, ``cli.options``; a package's ``__init__`` is
    the package's name): (module, name) of every relative import, module level or in a
    function, resolved to the module it names."""
    import ast
    from pathlib import Path

    root = Path(tl_multineuron.__file__).parent
    names = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        names[f] = (".".join(parts) or "__init__", parts if is_pkg else parts[:-1])
    known = {n for n, _ in names.values()}
    out = {}
    for f, (name, package) in names.items():
        found = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[: len(package) - (node.level - 1)]
                for a in node.names:
                    target = [*base, *(node.module.split(".") if node.module else [a.name])]
                    while target and ".".join(target) not in known:
                        target.pop()
                    found.add((".".join(target) or "__init__", a.name))
        out[name] = found
    return out


def test_no_import_cycle_and_no_private_name_across_modules():
    graph = _package_imports()
    edges = {m: {mod for mod, _ in found if mod != m} & set(graph) for m, found in graph.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(edges[m]):
            visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, cycles
    private = sorted(
        (m, mod, name)
        for m, found in graph.items()
        for mod, name in found
        if name.startswith("_") and not name.startswith("__") and mod != m
    )
    assert {"cli", "cli.options", "grid", "scoring"} <= set(graph)  # subpackages are walked
    assert not private, private


def test_public_api_is_lazy_and_complete():
    """``import tl_multineuron`` loads no module of the package (nor torch); every public name
    and every submodule loads on first access; an unknown name is an AttributeError."""
    import subprocess
    import sys

    code = (
        "import sys, tl_multineuron as t\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('tl_multineuron.'))\n"
        "assert not loaded and 'torch' not in sys.modules, loaded\n"
        "assert t.recording.__name__ == 'tl_multineuron.recording'\n"
        "assert t.load_item_categories.__module__ == 'tl_multineuron.runs'\n"
        "try:\n    t.no_such_name\n"
        "except AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(tl_multineuron.__all__) == set(tl_multineuron._EXPORTS)
    assert set(tl_multineuron.__all__) <= set(dir(tl_multineuron))
