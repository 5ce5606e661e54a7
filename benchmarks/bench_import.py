"""Start-up cost of the package and the CLI: the lazy public API vs loading every name.

Each figure is the median wall time of ``--repeat`` fresh interpreters (subprocesses), measured
in one run:

* ``import tl_multineuron`` (lazy: no module of the package, no torch);
* the same, then every public name touched -- what ``import tl_multineuron`` cost when the
  package imported all its modules eagerly (the floor for any command that needs the model);
* ``tl-multineuron --help`` now, and with every public name loaded first (the eager CLI);
* a bare ``python -c pass`` (the interpreter's own start-up, the floor of the lazy figures).

    python benchmarks/bench_import.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

EAGER = "import tl_multineuron as t; [getattr(t, n) for n in t.__all__]"
CASES = {
    "bare interpreter": "pass",
    "import tl_multineuron (lazy)": "import tl_multineuron",
    "import + every public name (eager)": EAGER,
    "tl-multineuron --help (lazy)": (
        "import sys; sys.argv = ['tl-multineuron', '--help']\n"
        "from tl_multineuron.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    ),
    "tl-multineuron --help (eager)": (
        f"import sys; sys.argv = ['tl-multineuron', '--help']\n{EAGER}\n"
        "from tl_multineuron.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    ),
}


def wall(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    got = {}
    for name, code in CASES.items():
        got[name] = wall(code, args.repeat)
        print(f"{name:38s} {got[name] * 1000:8.0f} ms", flush=True)
    imp = got["import + every public name (eager)"] / got["import tl_multineuron (lazy)"]
    hlp = got["tl-multineuron --help (eager)"] / got["tl-multineuron --help (lazy)"]
    print(f"import: eager / lazy = {imp:.1f}x; --help: eager / lazy = {hlp:.1f}x")
    lazy_over = got["tl-multineuron --help (lazy)"] - got["bare interpreter"]
    print(f"--help costs {lazy_over * 1000:.0f} ms above a bare interpreter")


if __name__ == "__main__":
    main()
