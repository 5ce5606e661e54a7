"""One writer per output directory: a lock file that names its holder and survives a crash.

:class:`DirectoryLock` creates ``.tl-multineuron.lock`` with ``O_EXCL`` and writes the holder's
pid, host, command and start time into it. A second process is refused with a message naming
the holder. A lock whose process is gone (same host, pid no longer alive: a SIGKILL, a power
cut) is stale and taken over; a lock held on another host cannot be checked from here, so the
message says which host and how to clear it.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import MultiNeuronError

LOCK_FILE = ".tl-multineuron.lock"
_HELD: list[DirectoryLock] = []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class DirectoryLock:
    """Exclusive use of ``directory`` by this process until :meth:`release` (or exit)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.held = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._holder()
                pid, host = other.get("pid"), other.get("host")
                if pid == me["pid"] and host == me["host"]:
                    self.held = True  # this process already holds it
                    return self
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if not other:  # being written right now, or unreadable: look again
                    time.sleep(0.05)
                    other = self._holder()
                    if not other:
                        self.path.unlink(missing_ok=True)
                        continue
                where = "this host" if host == me["host"] else f"host {host!r}"
                raise MultiNeuronError(
                    f"output directory {str(self.directory)!r} is in use by process {pid} on "
                    f"{where} (started {other.get('since')}: {other.get('command')!r}); wait for "
                    f"it to finish or stop it. If that process no longer exists, delete "
                    f"{str(self.path)!r}"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            _HELD.append(self)
            return self
        raise MultiNeuronError(f"could not lock {str(self.directory)!r}")  # pragma: no cover

    def release(self) -> None:
        if not self.held:
            return
        holder = self._holder()
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def release_all() -> None:
    """Release every lock this process holds (the CLI calls it when a command ends)."""
    while _HELD:
        _HELD.pop().release()


atexit.register(release_all)
