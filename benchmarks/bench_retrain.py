"""SAL-Net training and inference speed: ms per iteration, peak memory, images per second.

Each measured setting (backbone x precision x eager/compiled) runs in its own process, so that
its peak memory is its own.  A training iteration is exactly what ``salcurate retrain`` does per
batch (forward, attention product, L_sel + 2 L_atten, backward, SGD step with the heads at 10x)
on a synthetic batch already in memory: the data loader is left out (it runs in parallel
worker processes).  Inference is ``salcurate evaluate``'s single-scale and multi-scale
(0.5, 0.75, 1.0, max fusion) prediction of one 500 x 375 image.

Usage::

    .venv/bin/python benchmarks/bench_retrain.py --device cpu --iters 2 --out bench-out/retrain-cpu.json
    .venv/bin/python benchmarks/bench_retrain.py --device cuda --iters 20 --compile off on \
        --out bench-out/retrain-gpu.json

The paper (GTX 1080 Ti): 0.87 s per iteration (VGG16, batch 7, 321 x 321), 0.1 s per test image.
Goal on one H100: <= 67 ms per iteration for VGG16 (27,000 iterations in 30 minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from salcurate.nn.salnet import SALNet, SALNetConfig
    from salcurate.training.harness import Precision, prepare_model
    from salcurate.training.losses import sal_loss

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = SALNet(SALNetConfig(backbone=spec["backbone"], num_classes=spec["classes"]))
    precision = Precision(device, amp=spec["precision"] == "bf16")  # channels-last on CUDA, as retrain
    amp = precision.amp
    # as retrain sets the model up (device, memory format, cuDNN autotuning, torch.compile)
    fwd = prepare_model(model, precision, compile=spec["task"] == "train" and spec["compile"])
    result: dict[str, Any] = dict(spec)
    if spec["task"] == "train":
        backbone, heads = model.parameter_groups()
        opt = torch.optim.SGD([{"params": backbone, "lr": 1e-3}, {"params": heads, "lr": 1e-2}], lr=1e-3, momentum=0.9,
                              weight_decay=5e-4)
        b, s, c = spec["batch"], spec["crop"], spec["classes"]
        g = torch.Generator().manual_seed(0)
        x = precision.inputs(torch.randn(b, 3, s, s, generator=g))
        y = torch.randint(0, c + 1, (b, s, s), generator=g)
        y[:, :4] = 255
        y = y.to(device)
        w = torch.ones(b, device=device)
        tags = (torch.rand(b, c, generator=g) < 0.2).float().to(device)

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                o = fwd(x)
            att = torch.nn.functional.interpolate(o.attended.float(), size=(s, s), mode="bilinear", align_corners=False)
            loss, _, _ = sal_loss(att, o.classification, y, w, tags, lam=2.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        t0 = time.perf_counter()
        for _ in range(spec["warmup"]):
            step()
        sync()
        result["warmup_s"] = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(spec["iters"]):
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
        result["ms_per_iter"] = 1000 * float(np.median(times))
        result["ms_per_iter_all"] = [1000 * v for v in times]
        result["hours_for_27000"] = result["ms_per_iter"] * 27000 / 3.6e6
    else:
        from salcurate.evaluation.inference import predict_probabilities

        model.eval()
        image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
        for name, scales in (("single-scale", (1.0,)), ("multi-scale", (0.5, 0.75, 1.0))):
            for _ in range(spec["warmup"]):
                predict_probabilities(model, image, scales=scales, device=device)
            times = []
            for _ in range(spec["iters"]):
                t = time.perf_counter()
                predict_probabilities(model, image, scales=scales, device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            result[f"{name}_s_per_image"] = float(np.median(times))
            result[f"{name}_images_per_s"] = 1.0 / float(np.median(times))
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["device_name"] = torch.cuda.get_device_name()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["torch"] = torch.__version__
    result["threads"] = torch.get_num_threads()
    return result


def run_spec(spec: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """One measured setting (a ``_child`` spec) in its own process, so that its peak memory is its
    own; the spec with an ``error`` (the last line of the child's stderr) when it failed."""
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbones", nargs="+", default=["vgg16", "resnet101"])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    ap.add_argument("--batch", type=int, default=7)
    ap.add_argument("--crop", type=int, default=321)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--inference", action="store_true", help="also measure inference at 500 x 375")
    ap.add_argument("--out", type=Path, default=Path("bench-out/retrain.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    specs = [dict(task="train", device=args.device, backbone=b, precision=p, compile=c == "on", batch=args.batch,
                  crop=args.crop, classes=args.classes, iters=args.iters, warmup=args.warmup)
             for b in args.backbones for p in args.precision for c in args.compile]
    if args.inference:
        specs += [dict(task="inference", device=args.device, backbone=b, precision="fp32", compile=False,
                       classes=args.classes, iters=args.iters, warmup=args.warmup) for b in args.backbones]
    results = []
    for spec in specs:
        results.append(run_spec(spec))
        r = results[-1]
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
                          if k not in ("ms_per_iter_all",)}), flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "python": sys.version.split()[0]}
    payload = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
