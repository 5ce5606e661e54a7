"""Low-level file helpers: atomic writes (never a half-written file), JSON, and reading a
``torch.save`` d dict with errors that name the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    atomic_write(
        path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    )


def read_torch_file(path: str | Path, what: str) -> Any:
    """What ``torch.save`` wrote at ``path`` (tensors and plain values only: ``weights_only``);
    a missing or unreadable file is an error naming ``what`` and the file."""
    import torch

    from .errors import MultiNeuronError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise MultiNeuronError(f"{what}: {str(path)!r} does not exist") from e
    except Exception as e:  # noqa: BLE001 - a file torch cannot read is named, not re-raised raw
        raise MultiNeuronError(f"{what}: {str(path)!r} is not a file torch can read: {e}") from e


def read_torch_dict(
    path: str | Path, what: str, keys: tuple[str, ...] = (), version: int | None = None
) -> dict:
    """:func:`read_torch_file`, which must be a dict holding ``keys`` (and ``format_version ==
    version`` when given); anything else is an error naming ``what`` and the file."""
    from .errors import MultiNeuronError

    data = read_torch_file(path, what)
    if not isinstance(data, dict) or not set(keys) <= set(data):
        raise MultiNeuronError(f"{what}: {str(path)!r} is not a dict holding {list(keys)}")
    if version is not None and data.get("format_version") != version:
        raise MultiNeuronError(
            f"{what}: {str(path)!r} is not of format version {version} (re-record it)"
        )
    return data
