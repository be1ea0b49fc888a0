"""The paper's ablation (Table VI, P2 to P5) on the demo data, on the CPU with a small backbone.

Retrains SAL-Net (ResNet-18, random initialization: no ImageNet weights can be downloaded here)
on the demo store four ways and reports validation mIoU (single scale, every val image):

* P2: all proxies (``--selection none``), no attention loss;
* P3: proxies selected by SC >= 0.55, no attention loss;
* P4: proxies selected by SF >= 0.55, no attention loss;
* P5: as P4 with the attention loss (``--attention multiply``, lambda 2);
* and two variants of P5 (``--runs P5-multitask P5-lambda0.5``) that tell why it helps or hurts.

Usage (a store made by ``salcurate demo``, which has SC and SF scores)::

    .venv/bin/python benchmarks/quality_retrain.py --store salcurate-demo/masks.h5 --seeds 0 1 \
        --out bench-out/retrain-quality.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RUNS: dict[str, dict[str, Any]] = {
    "P2 all proxies": {"selection": None, "attention": "off"},
    "P3 + coarse selection (SC >= 0.55)": {"selection": "sc_tau0.55", "attention": "off"},
    "P4 + fine selection (SF >= 0.55)": {"selection": "sf_tau0.55", "attention": "off"},
    "P5 + attention loss": {"selection": "sf_tau0.55", "attention": "multiply"},
    # what hurts in P5 here: the product (multiply) or the branch's gradient into the shared backbone?
    "P5-multitask (branch trained, no product)": {"selection": "sf_tau0.55", "attention": "multitask"},
    "P5-lambda0.5 (multiply, lambda 0.5)": {"selection": "sf_tau0.55", "attention": "multiply", "lam": 0.5},
}
PAPER_RUNS = ("P2", "P3", "P4", "P5")


def _run(store: str, workdir: str, name: str, seed: int, common: dict[str, Any]) -> dict[str, Any]:
    import torch

    from salcurate.training.retrain import RetrainConfig, run

    torch.set_num_threads(1)
    out = Path(workdir) / f"{name.split()[0]}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    res = run(RetrainConfig(store=store, output=str(out), seed=seed, **RUNS[name], **common))
    return {"run": name, "seed": seed, "val_miou": res.validation["val_miou"],
            "val_pixel_accuracy": res.validation["val_pixel_accuracy"], "kept": res.counts["drawable"],
            "final_loss": res.final.get("loss"), "seconds": time.time() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/retrain-quality"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--runs", nargs="+", default=list(PAPER_RUNS), help="run names (first word) from RUNS")
    ap.add_argument("--out", type=Path, default=Path("bench-out/retrain-quality.json"))
    args = ap.parse_args()
    from salcurate.selection.select import SelectConfig
    from salcurate.selection.select import run as select

    for by in ("sc", "sf"):
        select(SelectConfig(store=str(args.store), by=by, tau=0.55, overwrite=True))
    common = dict(backbone="resnet18", backbone_weights="none", crop=args.crop, max_iter=args.iterations, lr=args.lr,
                  log_every=50, workers=0, tensorboard=False)
    args.workdir.mkdir(parents=True, exist_ok=True)
    names = [n for n in RUNS if n.split()[0] in args.runs]
    jobs = [(name, seed) for seed in args.seeds for name in names]
    with ProcessPoolExecutor(args.parallel) as pool:
        results = list(pool.map(_run, *zip(*[(str(args.store), str(args.workdir), n, s, common) for n, s in jobs])))
    table = []
    for name in names:
        vals = [r["val_miou"] for r in results if r["run"] == name]
        table.append({"run": name, "kept": next(r["kept"] for r in results if r["run"] == name),
                      "miou_mean": float(np.mean(vals)), "miou_per_seed": vals})
    payload = {"config": {**common, "seeds": args.seeds, "store": str(args.store)}, "results": results, "table": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| run | training images | val mIoU (mean) | per seed |\n| --- | --- | --- | --- |")
    for row in table:
        print(f"| {row['run']} | {row['kept']} | {100 * row['miou_mean']:.1f} | "
              + ", ".join(f"{100 * v:.1f}" for v in row["miou_per_seed"]) + " |")


if __name__ == "__main__":
    main()
