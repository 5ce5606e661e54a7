"""Long prompts on the embedded Gemma 3 270M: eager vs SDPA attention, and the memory estimate.

For prompts of 512, 2k and 8k tokens (one prompt, random token ids after BOS), each run in a
fresh process: recording time, peak RSS above the loaded model (the kernel's VmHWM, reset to
the current RSS after a short warm-up pass, less the file-backed pages the pass faulted in:
code and mapped files, not tensors), :func:`tl_multineuron.backends.memory.estimate_forward`
and its ratio to the measured peak, and whether the categories (``a > 0``) of every neuron
agree between the implementations.

    python benchmarks/bench_long_prompts.py [--tokens 512,2048,8192]
    python benchmarks/bench_long_prompts.py --measure eager 2048   # one run, JSON (tests use it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tl_multineuron.backends.versions import versions_line


def batch(n_tokens: int):
    from tl_multineuron.sharing.recording import TokenBatch

    g = torch.Generator().manual_seed(0)
    t = torch.randint(1000, 20000, (1, n_tokens), generator=g)
    t[0, 0] = 2  # Gemma's BOS
    return TokenBatch(t, torch.tensor([n_tokens]), True)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns it in bytes. The
    model load's transient peak would otherwise hide a smaller pass."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def peak_since_reset() -> int:
    return _status_kib("VmHWM") * 1024


def file_pages() -> int:
    """Resident file-backed and shared pages (bytes): library code and mapped files. Pages
    faulted in during the pass (a GEMM kernel's code on a CPU that picks another one) count in
    VmHWM but are no tensor; they stay resident, so their growth is read after the pass."""
    return (_status_kib("RssFile") + _status_kib("RssShmem")) * 1024


def measure(attention: str, n_tokens: int, save: str | None) -> dict:
    import tl_multineuron as tlm
    from tl_multineuron.backends.memory import estimate_forward

    model = tlm.load_model()
    tlm.record(model, batch(16), attention=attention)  # warm-up: allocator, kernels
    base = reset_peak()
    files0 = file_pages()
    t0 = time.perf_counter()
    acts = tlm.record(model, batch(n_tokens), attention=attention)
    seconds = time.perf_counter() - t0
    raw_peak = peak_since_reset() - base
    files = max(0, file_pages() - files0)
    peak = raw_peak - files
    est = estimate_forward(model, 1, n_tokens, attention)
    if save:
        torch.save(acts.cpu(), save)
    return {
        "attention": attention,
        "tokens": n_tokens,
        "seconds": seconds,
        "peak_bytes": peak,
        "raw_peak_bytes": raw_peak,
        "file_pages_bytes": files,
        "estimate_bytes": est.total,
    }


def run_child(attention: str, n_tokens: int, save: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--measure", attention, str(n_tokens)]
    if save:
        cmd += ["--save", save]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="512,2048,8192")
    ap.add_argument("--measure", nargs=2, metavar=("ATTENTION", "TOKENS"))
    ap.add_argument("--save")
    args = ap.parse_args()
    print(versions_line(), flush=True)
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]), args.save)))
        return
    mib = 2**20
    print(
        f"{'tokens':>6} {'attention':>9} {'time s':>7} {'peak MiB':>9} {'files':>6} "
        f"{'estimate':>9} {'est/peak':>8}  categories"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.tokens.split(",")):
            rows = {}
            for impl in ("eager", "sdpa"):
                f = str(Path(tmp) / f"{impl}-{n}.pt")
                rows[impl] = run_child(impl, n, f)
                rows[impl]["acts"] = torch.load(f)
            a, b = rows["eager"]["acts"], rows["sdpa"]["acts"]
            same = bool(((a > 0) == (b > 0)).all())
            diff = float((a - b).abs().max())
            for impl, r in rows.items():
                ratio = r["estimate_bytes"] / r["peak_bytes"]
                print(
                    f"{n:>6} {impl:>9} {r['seconds']:>7.1f} {r['peak_bytes'] / mib:>9.0f} "
                    f"{r['file_pages_bytes'] / mib:>6.0f} "
                    f"{r['estimate_bytes'] / mib:>9.0f} {ratio:>8.2f}"
                    + (f"  identical: {same} (max |diff| {diff:.2g})" if impl == "sdpa" else "")
                )
            e, s = rows["eager"], rows["sdpa"]
            print(
                f"{n:>6} sdpa/eager: time {s['seconds'] / e['seconds']:.2f}x, "
                f"peak {s['peak_bytes'] / e['peak_bytes']:.2f}x"
            )


if __name__ == "__main__":
    main()
