"""Command line: ``tl-multineuron analyze | attribute | intervene | grid | paper | steer |
specificity | evaluate | merge | report | tasks``.

One module per command, each with ``HELP``, ``register(parser)`` (its options) and
``run(args) -> int``; shared option groups and helpers live in :mod:`.options`. Only the
command being run registers its options (they import the config dataclasses their defaults
come from), so ``tl-multineuron --help`` imports no torch."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MultiNeuronError

#: Command name -> module (in this package), in the order ``--help`` lists them.
COMMANDS = {
    "analyze": "analyze",
    "attribute": "attribute",
    "intervene": "intervene",
    "grid": "grid",
    "paper": "paper",
    "evaluate": "evaluate",
    "report": "report",
    "merge": "merge",
    "steer": "steer",
    "specificity": "specificity",
    "tasks": "tasks",
}


def _command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; every command's options, or (``command``) only that command's ("": none)."""
    ap = argparse.ArgumentParser(prog="tl-multineuron", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f".{module}", __name__)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.__doc__,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if command is None or command == name:
            mod.register(p)
        p.set_defaults(func=mod.run)
    return ap


#: Commands that load a model and run for a while: their first line names any installed
#: version that differs from the tested lock.
LONG_COMMANDS = (
    "analyze",
    "attribute",
    "intervene",
    "grid",
    "paper",
    "evaluate",
    "steer",
    "specificity",
)


def main(argv: list[str] | None = None) -> int:
    # only the named command registers its options (none for a bare --help)
    command = _command(sys.argv[1:] if argv is None else argv) or ""
    args = build_parser(command).parse_args(argv)
    try:
        if args.command in LONG_COMMANDS:
            from ..backends.versions import drift_line

            line = drift_line()
            if line is not None:
                print(line, file=sys.stderr, flush=True)
        if getattr(args, "checkpoint_every", 1) < 1:
            raise MultiNeuronError(f"--checkpoint-every {args.checkpoint_every}: expected >= 1")
        if getattr(args, "max_memory", None) is not None:
            from ..backends.memory import parse_memory

            parse_memory(args.max_memory)  # a bad size fails before anything loads
        if getattr(args, "device", None) is not None:
            from ..backends.devices import resolve_device

            resolve_device(args.device)
        from ..runs.distributed import rank_info

        info = rank_info()
        if info is not None:
            from .torchrun import run_rank

            return run_rank(args, info)
        return args.func(args)
    except MultiNeuronError as e:
        print(f"tl-multineuron: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or directory that cannot be read or written: it is named
        print(f"tl-multineuron: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted; results up to the last checkpoint are saved: rerun with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        from ..runs.locks import release_all

        release_all()


if __name__ == "__main__":
    sys.exit(main())
