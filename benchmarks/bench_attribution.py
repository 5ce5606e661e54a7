"""Integrated gradients: ours vs captum on the same problem (embedded Gemma), one run.

    python benchmarks/bench_attribution.py [--prompts 3] [--steps 20]

For each prompt: IG of log p(answer's first token) w.r.t. all 2048 neurons of one layer at the
last position. Compared: ours (steps + input + baseline in one batch, unembedding only the last
position), captum IntegratedGradients on the same function, and captum
LayerIntegratedGradients on the layer's hook (the usual captum recipe: it interpolates the
activations at every position). Prints wall time, forward/backward passes per prompt, peak
memory (each variant in a fresh process) and agreement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from tl_multineuron.backends.versions import versions_line

CHILD = r"""
import json, resource, sys, time, torch
import tl_multineuron as tlm
from tl_multineuron.attribution.scores import answer_token_ids, integrated_gradients
from tl_multineuron.sharing.recording import encode as encode_prompt
variant, n_prompts, steps, layer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = tlm.load_model()
ds = tlm.load_task("facts").head(n_prompts)
prompts = [it.prompts["en"] for it in ds]
toks = answer_token_ids(model, prompts, [it.answers["en"] for it in ds], prompts)
hook = f"blocks.{layer}.mlp.hook_post"
counts = {"fwd": 0, "bwd": 0}
_grad = torch.autograd.grad
def counting_grad(*a, **k):  # every backward pass here goes through autograd.grad
    counts["bwd"] += 1
    return _grad(*a, **k)
torch.autograd.grad = counting_grad
def fcount(act, hook):
    counts["fwd"] += 1
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = []
t0 = time.perf_counter()
with model.hooks(fwd_hooks=[("hook_embed", fcount)]):
    for p, t in zip(prompts, toks.tolist()):
        ids = encode_prompt(model, p)
        last = len(ids) - 1
        if variant == "ours":
            out.append(integrated_gradients(model, p, t, layer, steps=steps).attributions)
            continue
        from captum.attr import IntegratedGradients, LayerIntegratedGradients
        if variant == "captum_ig":
            def f(x):
                tk = torch.tensor([ids] * x.shape[0])
                def patch(act, hook):
                    act = act.clone(); act[:, last] = x; return act
                with model.hooks(fwd_hooks=[(hook_name, patch)]):
                    return torch.log_softmax(model(tk)[:, last], -1)[:, t]
            hook_name = hook
            a = tlm.record(model, tlm.tokenize(model, [p]))[0, layer].clone()
            attr = IntegratedGradients(f).attribute(a[None], baselines=torch.zeros_like(a)[None],
                n_steps=steps, method="gausslegendre", internal_batch_size=steps)[0]
            out.append(attr.detach())
        else:
            def g(tk):
                return torch.log_softmax(model(tk)[:, last], -1)[:, t]
            lig = LayerIntegratedGradients(g, model.hook_dict[hook])
            tk = torch.tensor([ids])
            base = torch.zeros_like(tk)  # the usual input baseline: pad tokens after <bos>
            base[:, 0] = tk[:, 0]
            attr = lig.attribute(tk, baselines=base, n_steps=steps, method="gausslegendre",
                internal_batch_size=steps, attribute_to_layer_input=False)
            out.append(attr[0, last].detach())
secs = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch.save(torch.stack(out), sys.argv[5])
print(json.dumps({"secs": secs, "fwd": counts["fwd"], "bwd": counts["bwd"],
                  "peak_mib": peak / 1024, "growth_mib": (peak - base_rss) / 1024}))
"""


def main() -> None:
    import tempfile

    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layer", type=int, default=12)
    args = ap.parse_args()
    print(versions_line(), flush=True)
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for v in ("ours", "captum_ig", "captum_lig"):
            path = f"{d}/{v}.pt"
            r = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    v,
                    str(args.prompts),
                    str(args.steps),
                    str(args.layer),
                    path,
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise SystemExit(r.stderr[-3000:])
            res[v] = json.loads(r.stdout.strip().splitlines()[-1])
            res[v]["attr"] = torch.load(path)
    n = args.prompts
    print(f"IG, embedded Gemma, layer {args.layer} (2048 neurons), {args.steps} steps, {n} prompts")
    for v, r in res.items():
        print(
            f"  {v:11s} {r['secs'] / n:6.2f} s/prompt  forward passes/prompt "
            f"{r['fwd'] / n:.0f}  backward passes/prompt {r['bwd'] / n:.0f}  peak RSS "
            f"{r['peak_mib']:.0f} MiB (+{r['growth_mib']:.0f} MiB over the loaded model)"
        )
    o, c = res["ours"]["attr"], res["captum_ig"]["attr"].float()
    rel = float((o - c).abs().max() / c.abs().max())
    t_ours = res["ours"]["secs"]
    sp_ig = res["captum_ig"]["secs"] / t_ours
    sp_lig = res["captum_lig"]["secs"] / t_ours
    print(
        f"  speed: ours vs captum IntegratedGradients {sp_ig:.2f}x, vs captum "
        f"LayerIntegratedGradients {sp_lig:.2f}x (target >= 1x)"
    )
    print(
        f"  agreement with captum IntegratedGradients (same problem): max |diff| / max |attr| "
        f"= {rel:.2e}"
    )
    lig = res["captum_lig"]["attr"].float()
    print(
        f"  captum LIG interpolates every position (a different path): max |diff| / max "
        f"|attr| vs ours = {float((o - lig).abs().max() / lig.abs().max()):.2e}"
    )


if __name__ == "__main__":
    main()
