"""The versions this library was tested with, and how the installed ones differ from them.

``scripts/bootstrap.sh`` installs ``requirements/tl4.lock`` (TransformerLens 4.x) and
``scripts/bootstrap_tl3.sh`` installs ``requirements/tl3.lock`` (TransformerLens 3.x beside
SAELens): exact versions, compiled by pip-tools from ``pyproject.toml`` (see
docs/install.md). The locks ship with the package, so a run in an environment that differs from
them says so on its first line (:func:`drift_line`): a newer transformers can change numerics
or switch off a fast path without any error.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import PackageNotFoundError, distributions, version
from importlib.resources import files

#: The packages whose versions every benchmark and drift line names first.
STACK = ("torch", "transformers", "transformer-lens")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def stack_versions() -> dict[str, str]:
    """The installed torch, transformers and transformer-lens (``'-'`` where absent)."""
    return {name: _installed(name) or "-" for name in STACK}


def stack_text() -> str:
    """The installed stack as text: ``torch X, transformers Y, transformer-lens Z``."""
    return ", ".join(f"{k} {v}" for k, v in stack_versions().items())


def versions_line() -> str:
    """One line naming the installed stack, e.g. for a benchmark's header."""
    return "versions: " + stack_text()


def parse_lock(text: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a pip-compile lock (extras,
    comments, markers and local version labels such as ``+cpu`` dropped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#\\]+)", line)
        if m:
            out[_norm(m.group(1))] = m.group(3).split("+")[0]
    return out


def lock_name() -> str:
    """The lock of the installed TransformerLens line: ``tl4`` or ``tl3``."""
    tl = _installed("transformer-lens") or "4"
    return "tl3" if tl.startswith("3.") else "tl4"


@functools.lru_cache(maxsize=2)
def tested_versions(lock: str | None = None) -> dict[str, str]:
    """The exact versions of a shipped lock (default: the installed line's)."""
    name = lock or lock_name()
    path = files("tl_multineuron") / "requirements" / f"{name}.lock"
    return parse_lock(path.read_text(encoding="utf-8"))


def version_drift(lock: str | None = None) -> list[tuple[str, str, str]]:
    """``(package, installed, tested)`` for every locked package installed at another version
    (the stack first, then by name). Packages the lock has but the environment lacks are
    not listed: optional extras need not be installed."""
    tested = tested_versions(lock)
    installed = {
        _norm(d.metadata["Name"]): d.version.split("+")[0]
        for d in distributions()
        if d.metadata["Name"]
    }
    diff = [
        (name, installed[name], want)
        for name, want in tested.items()
        if name in installed and installed[name] != want
    ]
    return sorted(diff, key=lambda r: (r[0] not in STACK, r[0]))


def drift_line(lock: str | None = None, limit: int = 6) -> str | None:
    """One line saying which installed versions differ from the tested lock, or ``None``."""
    diff = version_drift(lock)
    if not diff:
        return None
    shown = ", ".join(f"{n} {have} (tested {want})" for n, have, want in diff[:limit])
    more = f" and {len(diff) - limit} more" if len(diff) > limit else ""
    return (
        f"note: this environment differs from the tested versions ({lock or lock_name()}.lock): "
        f"{shown}{more}; bash scripts/bootstrap.sh installs the tested set"
    )
