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

    names = [m.name for m in pkgutil.walk_packages(tl_multineuron.__path__, "tl_multineuron.")]
    assert "tl_multineuron.sharing.recording" in names and "tl_multineuron.cli.grid" in names
    for name in names:
        importlib.import_module(name)


def test_installed_line_is_supported_and_named():
    from tl_multineuron.backends.tl_compat import SUPPORTED_LINES, native_kind, tl_line

    assert tl_line() in SUPPORTED_LINES
    assert native_kind() == ("TransformerBridge" if tl_line() == 4 else "HookedTransformer")


def _package_imports() -> dict[str, set[tuple[str, str]]]:
    """Per module (dotted name inside the package, ``cli.options``; a package's ``__init__`` is
    the package's name): (module, name) of every relative import that runs, module level or in
    a function (not those under ``if TYPE_CHECKING:``), resolved to the module it names."""
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
        tree = ast.parse(f.read_text(encoding="utf-8"))
        typing_only = {  # imports under `if TYPE_CHECKING:` never run
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
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
    assert {"cli", "cli.options", "runs.grid", "experiments.scoring"} <= set(
        graph
    )  # subpackages are walked
    assert not private, private


@pytest.mark.subprocess
def test_public_api_is_lazy_and_complete():
    """``import tl_multineuron`` loads no module of the package (nor torch); every public name
    and every submodule loads on first access; an unknown name is an AttributeError."""
    import subprocess
    import sys

    code = (
        "import sys, tl_multineuron as t\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('tl_multineuron.'))\n"
        "assert not loaded and 'torch' not in sys.modules, loaded\n"
        "assert t.sharing.__name__ == 'tl_multineuron.sharing'\n"
        "assert t.load_item_categories.__module__ == 'tl_multineuron.runs.directories'\n"
        "try:\n    t.no_such_name\n"
        "except AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(tl_multineuron.__all__) == set(tl_multineuron._EXPORTS)
    assert set(tl_multineuron.__all__) <= set(dir(tl_multineuron))


#: pipeline stages, lowest first: a package may import only from its own stage and those below
LAYERS = ("data", "backends", "sharing", "attribution", "experiments", "steering", "runs", "report")


def test_subpackages_import_top_down():
    """The package reads top-down: ``errors``/``files`` at the bottom, then the stages in
    ``LAYERS`` order, ``cli`` on top; no stage imports one above it."""
    rank = {"errors": -1, "files": -1, **{p: i for i, p in enumerate(LAYERS)}, "cli": len(LAYERS)}
    rank["__init__"] = rank["__main__"] = len(LAYERS) + 1
    upward = []
    for m, found in _package_imports().items():
        own = m.split(".")[0]
        for mod, name in found:
            target = mod.split(".")[0]
            if target == "__init__" and name == "__version__":
                continue  # the version string, defined in the package root before anything else
            if rank[target] > rank[own] or (target != own and rank[target] == rank[own] >= 0):
                upward.append((m, mod))
    assert not upward, upward
    assert set(LAYERS) | {"cli"} == {m.split(".")[0] for m in _package_imports() if "." in m}


def test_no_test_benchmark_or_script_imports_a_private_name():
    """Tests, benchmarks, scripts and examples use the package's public names only."""
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent
    found = []
    for d in ("tests", "benchmarks", "scripts", "examples"):
        for f in (root / d).glob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "tl_multineuron"
                ):
                    found += [
                        (f.name, node.module, a.name)
                        for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                    ]
    assert not found, found
