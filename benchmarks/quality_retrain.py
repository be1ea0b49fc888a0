"""The paper's ablation (Table VI, P2 to P5) on the demo data, on the CPU with a small backbone.

Retrains SAL-Net (ResNet-18) on a store's proxies several ways and reports validation mIoU
(single scale, every val image) with its spread over seeds:

* P2: all proxies (``selection`` none), no attention loss;
* P3: proxies selected by SC, no attention loss;
* P4: proxies selected by SF, no attention loss;
* P5: as P4 with the attention loss (``attention multiply``, lambda 2);
* variants: ``P5-multitask`` and ``P5-lambda0.5`` (why P5 helps or hurts), ``P4q`` (selected by the
  combined score ``q`` of ``salcurate score-combined``, issue 12), ``P4qc`` (q, the best 30 % of each
  class), ``P4qn`` and ``P4qnc`` (q without its tag prior, globally and per class; the script writes
  that column, ``qn``), ``P4o`` (selected by the true per-image mIoU: the best any score ranked
  against it can do; the script writes that column, ``oracle``, from the ground truth) and ``P4oa``
  (the same by the true pixel accuracy, ``oracle_pa``), ``P4qs`` (q ranked within each number of
  tags, a column ``qs``: the best half keeps every tag count's share).

The selection rule is the paper's ``--rule tau`` (score >= 0.55) or ``--rule half`` (the best half
by the score: CAM proxies from a classifier trained on this CPU rarely reach 0.55).  The start is
random weights (``--backbone-weights none``, lr 1e-2, batch norm trained), a backbone file (the tag
classifier's ``runs/pseudo-label/backbone.pth``; batch norm fixed, lr 1e-3: at 1e-2 the loss diverges
from it) or the whole tag classifier (``runs/pseudo-label/classifier.pt``: the heads start as its
CAMs; train and validate near its scale with ``--scale-min``, ``--scale-max`` and ``--val-scale``).

Usage (a store made by ``salcurate demo``, which has the proxy set ``cam`` with SC and SF)::

    .venv/bin/python benchmarks/quality_retrain.py --store salcurate-demo/masks.h5 --proxy cam \\
        --backbone-weights salcurate-demo/runs/pseudo-label/backbone.pth --rule half --seeds 0 1 2 \\
        --out bench-out/retrain-quality-cam.json
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

#: run name -> score to select by (None: all proxies) and retrain settings
RUNS: dict[str, dict[str, Any]] = {
    "P2 all proxies": {"by": None, "attention": "off"},
    "P3 + coarse selection (SC)": {"by": "sc", "attention": "off"},
    "P4 + fine selection (SF)": {"by": "sf", "attention": "off"},
    "P5 + attention loss": {"by": "sf", "attention": "multiply"},
    # what hurts in P5 here: the product (multiply) or the branch's gradient into the shared backbone?
    "P5-multitask (branch trained, no product)": {"by": "sf", "attention": "multitask"},
    "P5-lambda0.5 (multiply, lambda 0.5)": {"by": "sf", "attention": "multiply", "lam": 0.5},
    "P4q + selection by the combined score q": {"by": "q", "attention": "off"},
    # q kept per class (select --by q --top-fraction 0.3 --per-class, made beforehand): coverage back?
    "P4qc + per-class selection by q": {"by": "q", "attention": "off", "selection": "q:cam_top0.3_perclass"},
    # q without its tag prior (a column qn = (AC x CE)^(1/2) written beside q for this run)
    "P4qn + selection by q without the tag prior": {"by": "qn", "attention": "off"},
    # the same, kept per class (select --by qn --top-fraction 0.3 --per-class, made beforehand)
    "P4qnc + per-class selection by q without the tag prior": {"by": "qn", "attention": "off",
                                                               "selection": "qn:cam_top0.3_perclass"},
    # the ceiling of any score ranked against per-image mIoU: the true per-image mIoU (ground truth,
    # which no user has; a column oracle written for this run)
    "P4o + selection by the true per-image mIoU (oracle)": {"by": "oracle", "attention": "off"},
    # the same with the true pixel accuracy (the share of the proxy's pixels labelled right)
    "P4oa + selection by the true pixel accuracy (oracle)": {"by": "oracle_pa", "attention": "off"},
    # q ranked within each number of tags (a column qs, q's percentile among the proxies with as many
    # tags): the best half keeps the same share of every tag count, so the objects stay
    "P4qs + selection by q within each tag count": {"by": "qs", "attention": "off"},
}
PAPER_RUNS = ("P2", "P3", "P4", "P5")


def selection_name(by: str, proxy: str, rule: str) -> str:
    from salcurate.data.store import proxy_column

    return f"{proxy_column(by, proxy)}_{'tau0.55' if rule == 'tau' else 'best_half'}"


def make_selections(store: Path, proxy: str, rule: str, bys: set[str]) -> dict[str, int]:
    """The selections the runs need; returns how many images each keeps."""
    from salcurate.data.store import MaskStore, proxy_column
    from salcurate.selection.select import SelectConfig
    from salcurate.selection.select import run as select

    kept = {}
    for by in sorted(bys):
        if rule == "tau":
            cfg = SelectConfig(store=str(store), proxy=proxy, by=by, tau=0.55, overwrite=True,
                               name=selection_name(by, proxy, rule))
        else:
            with MaskStore(store) as st:
                scores = st.score(proxy_column(by, proxy))
                n = int((~np.isnan(scores) & (st.splits == "train")).sum())
            cfg = SelectConfig(store=str(store), proxy=proxy, by=by, top_k=max(1, n // 2), overwrite=True,
                               name=selection_name(by, proxy, rule))
        kept[by] = select(cfg).kept
    return kept


def write_qn(store: Path, proxy: str) -> None:
    """The column ``qn`` (q without its tag prior: the geometric mean of AC and CE) for runs P4qn/P4qnc,
    and the per-class selection P4qnc trains on (the best 30 % of each class by qn)."""
    from salcurate.data import store as store_mod
    from salcurate.scoring.combined import combined_score
    from salcurate.selection.select import SelectConfig
    from salcurate.selection.select import run as select

    with store_mod.MaskStore(store) as st:
        ac, ce = (np.clip(st.score(store_mod.proxy_column(c, proxy)).astype(np.float64), 0, 1) for c in ("ac", "ce"))
    qn = combined_score({"ac": ac, "ce": ce}, weights={"ac": 1.0, "ce": 1.0})
    with store_mod.transaction(store, command="benchmark", config={"what": "q without the tag prior"}) as tx:
        tx.put_scores({store_mod.proxy_column("qn", proxy): qn}, config={"weights": {"ac": 1, "ce": 1}},
                      command="benchmark", overwrite=True)
    select(SelectConfig(store=str(store), proxy=proxy, by="qn", top_fraction=0.3, per_class=True, overwrite=True,
                        name=RUNS["P4qnc + per-class selection by q without the tag prior"]["selection"]))


def write_oracle(store: Path, proxy: str) -> None:
    """The columns ``oracle``, each proxy's true per-image mIoU against the ground truth (the
    quality the realistic benchmark ranks scores against), for run P4o, and ``oracle_pa``, its
    pixel accuracy (pixels where neither map is the ignore label), for run P4oa; NaN without ground truth."""
    from salcurate.data import store as store_mod
    from salcurate.scoring.metrics import IGNORE_LABEL, proxy_miou

    with store_mod.MaskStore(store) as st:
        miou, pa = np.full(st.num_samples, np.nan), np.full(st.num_samples, np.nan)
        for i in range(st.num_samples):
            gt = st.map("gt", i)
            if gt is not None:
                p = st.map(proxy, i)
                miou[i] = proxy_miou(p, gt, st.num_classes)
                valid = (p != IGNORE_LABEL) & (gt != IGNORE_LABEL)
                pa[i] = float((p[valid] == gt[valid]).mean()) if valid.any() else np.nan
    with store_mod.transaction(store, command="benchmark", config={"what": "true per-image quality"}) as tx:
        tx.put_scores({store_mod.proxy_column("oracle", proxy): miou, store_mod.proxy_column("oracle_pa", proxy): pa},
                      config={"truth": "per-image mIoU, pixel accuracy"}, command="benchmark", overwrite=True)


def group_percentile(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """values: ``(N,)`` float (NaN: none), groups: ``(N,)`` int -> ``(N,)`` each value's rank within
    its group over the group's size, (rank + 1) / n in (0, 1] (ties in order of appearance); NaN stays."""
    out = np.full(len(values), np.nan)
    for g in np.unique(groups):
        members = np.flatnonzero((groups == g) & np.isfinite(values))
        if len(members):
            order = np.argsort(np.argsort(values[members], kind="stable"), kind="stable")
            out[members] = (order + 1) / len(members)
    return out


def write_stratified(store: Path, proxy: str) -> None:
    """The column ``qs`` for run P4qs: each proxy's percentile of q among the proxies with the same
    number of tags (1/n for the worst of a group of n, 1 for its best; NaN where q is)."""
    from salcurate.data import store as store_mod

    with store_mod.MaskStore(store) as st:
        q = st.score(store_mod.proxy_column("q", proxy)).astype(np.float64)
        tags = st.tags.sum(axis=1)
    qs = group_percentile(q, tags)
    with store_mod.transaction(store, command="benchmark", config={"what": "q within each tag count"}) as tx:
        tx.put_scores({store_mod.proxy_column("qs", proxy): qs}, config={"from": "q", "groups": "number of tags"},
                      command="benchmark", overwrite=True)


def per_class_selection(store: Path, proxy: str, by: str, name: str) -> None:
    """The best 30 % of each class by ``by`` (``select --per-class --top-fraction 0.3``)."""
    from salcurate.selection.select import SelectConfig
    from salcurate.selection.select import run as select

    select(SelectConfig(store=str(store), proxy=proxy, by=by, top_fraction=0.3, per_class=True, overwrite=True,
                        name=name))


def _run(store: str, workdir: str, name: str, seed: int, common: dict[str, Any], proxy: str,
         rule: str) -> dict[str, Any]:
    import torch

    from salcurate.training.retrain import RetrainConfig, run

    torch.set_num_threads(1)
    spec = dict(RUNS[name])
    by = spec.pop("by")
    out = Path(workdir) / f"{name.split()[0]}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    selection = spec.pop("selection", None) or (None if by is None else selection_name(by, proxy, rule))
    res = run(RetrainConfig(store=store, output=str(out), seed=seed, proxy=proxy, selection=selection,
                            **spec, **common))
    return {"run": name, "seed": seed, "val_miou": res.validation["val_miou"],
            "val_pixel_accuracy": res.validation["val_pixel_accuracy"], "kept": res.counts["drawable"],
            "final_loss": res.final.get("loss"), "seconds": time.time() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--proxy", default="proxy", help="proxy set (the demo's is cam)")
    ap.add_argument("--backbone-weights", default="none",
                    help="none (random), a backbone .pth file or a tag classifier (classifier.pt)")
    ap.add_argument("--rule", choices=("tau", "half"), default="tau")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/retrain-quality"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--lr", type=float, help="default 1e-2 from random weights, 1e-3 from a backbone file")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=7)
    ap.add_argument("--scale-min", type=float, default=0.5)
    ap.add_argument("--scale-max", type=float, default=1.5)
    ap.add_argument("--val-scale", type=float, default=1.0, help="scale of the validation images (near training's)")
    ap.add_argument("--head-lr-mult", type=float, help="retrain's default: 10, or 1 from a tag classifier")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--runs", nargs="+", default=list(PAPER_RUNS), help="run names (first word) from RUNS")
    ap.add_argument("--out", type=Path, default=Path("bench-out/retrain-quality.json"))
    args = ap.parse_args()
    names = [n for n in RUNS if n.split()[0] in args.runs]
    if any(RUNS[n]["by"] == "qn" for n in names):
        write_qn(args.store, args.proxy)
    if any(RUNS[n]["by"] == "qs" for n in names):
        write_stratified(args.store, args.proxy)
    if any(RUNS[n]["by"] in ("oracle", "oracle_pa") for n in names):
        write_oracle(args.store, args.proxy)
    for n in names:
        if RUNS[n].get("selection") == "q:cam_top0.3_perclass":
            per_class_selection(args.store, args.proxy, "q", RUNS[n]["selection"])
    kept = make_selections(args.store, args.proxy, args.rule,
                           {RUNS[n]["by"] for n in names if "selection" not in RUNS[n]} - {None})
    pretrained = args.backbone_weights != "none"
    lr = args.lr if args.lr is not None else (1e-3 if pretrained else 1e-2)
    common = dict(backbone="resnet18", backbone_weights=args.backbone_weights, crop=args.crop,
                  batch_size=args.batch_size, scale_min=args.scale_min, scale_max=args.scale_max,
                  val_scale=args.val_scale, head_lr_mult=args.head_lr_mult,
                  max_iter=args.iterations, lr=lr, log_every=50, workers=0, tensorboard=False)
    args.workdir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed) for seed in args.seeds for name in names]
    with ProcessPoolExecutor(args.parallel) as pool:
        results = list(pool.map(_run, *zip(*[(str(args.store), str(args.workdir), n, s, common, args.proxy, args.rule)
                                             for n, s in jobs])))
    table = []
    for name in names:
        vals = [r["val_miou"] for r in results if r["run"] == name]
        table.append({"run": name, "kept": next(r["kept"] for r in results if r["run"] == name),
                      "miou_mean": float(np.mean(vals)), "miou_sd": float(np.std(vals, ddof=1)) if len(vals) > 1
                      else None, "miou_per_seed": vals})
    payload = {"config": {**common, "seeds": args.seeds, "store": str(args.store), "proxy": args.proxy,
                          "rule": args.rule, "kept": kept}, "results": results, "table": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| run | training images | val mIoU: mean (sd) | per seed |\n| --- | --- | --- | --- |")
    for row in table:
        sd = f" ({100 * row['miou_sd']:.1f})" if row["miou_sd"] is not None else ""
        print(f"| {row['run']} | {row['kept']} | {100 * row['miou_mean']:.1f}{sd} | "
              + ", ".join(f"{100 * v:.1f}" for v in row["miou_per_seed"]) + " |")


if __name__ == "__main__":
    main()
