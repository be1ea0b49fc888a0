"""How well each score finds bad CAM-made proxies: a realistic benchmark beside simple baselines.

Builds once (cached in ``--workdir``) a data set unlike the demo's: scenes of
``salcurate.data.scenes`` (photo backgrounds, 1-4 objects of look-alike classes, saliency maps that
fail independently of the proxies; its own seed, more classes and a larger size than the demo),
in PASCAL VOC layout with ground truth, tags and saliency maps.  Then, each step skipped when its
result is already in the store:

1. ``import voc`` (no proxies: tags, saliency and ground truth only);
2. ``pseudo-label``: a tag classifier's CAM proxies (the proxy set ``cam``);
3. ``score-coarse`` on them (the store's saliency maps, Otsu, no CRF: the defaults);
4. optionally ``train-scorer`` + ``score-fine`` (``--fine``), ``score-evidence`` (``--evidence``),
   ``score-model`` (``--model``) and ``score-combined`` (``--combined``, the default score q);
   ``--candidates`` reports other weightings of q without storing them, ``--reliability`` q with AC
   weighted per image by score-evidence's reference reliability ``hr`` (and constant-weight controls);
5. optionally (``--fine-q``) the fine scorer on better evidence (issue 12): ``train-scorer`` with a
   score column as target (q by default) and the label map or the binary mask as input, then
   ``score-fine`` (columns ``p_q``/``sf_q``, ``p_q_labels``/``sf_q_labels``).  Each scorer holds out
   half of the images (``--fine-q-holdout``; the same half for every variant), and the table is
   reported twice: on all train proxies, and on the held-out ones alone, where no scorer saw the
   proxy's target (q, SC, ... on the same images beside them).  Run it on a copy of the store
   (``--from-store``), as it adds columns.

For every score column of the proxy set and two baselines (the IoU of the proxy's foreground with
the Otsu-binarized saliency map; minus the number of tags) it reports, on the train split (the
proxies a user would select from):

* Spearman with per-image class-aware mIoU (proxy against ground truth, classes present in either)
  and with foreground IoU;
* the AUROC for finding proxies with mIoU < 0.5 from low scores;
* the kept set's mean mIoU at each of the paper's taus and when the best half is kept;
* the same Spearman where the saliency map is poor (F-measure against the ground-truth foreground
  < 0.5) and where it is good (>= 0.8).

Usage::

    .venv/bin/python benchmarks/quality_realistic.py --workdir bench-out/realistic \\
        --json bench-out/realistic/quality.json --markdown bench-out/realistic/quality.md
    .venv/bin/python benchmarks/quality_realistic.py --workdir bench-out/realistic-fq \\
        --from-store bench-out/realistic/masks.h5 --fine-q --json bench-out/realistic-fq/quality-fq.json \\
        --markdown bench-out/realistic-fq/quality-fq.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.data.store import MaskStore, copy_store, proxy_column
from salcurate.paper import TABLE_IV_TAUS
from salcurate.scoring.metrics import f_measure, foreground, proxy_miou
from salcurate.scoring.reference import threshold_mask
from salcurate.stats import auroc, spearman
from salcurate.training.folds import ScoreModelConfig

BAD_BELOW = 0.5


# ------------------------------------------------------------------------------------------
# Truth and baselines per sample (pure functions of the maps)
# ------------------------------------------------------------------------------------------
def foreground_iou(proxy: np.ndarray, gt: np.ndarray) -> float:
    """IoU of the proxy's foreground with the ground truth's; pixels 255 in either left out."""
    b, valid_p = foreground(proxy)
    g, valid_g = foreground(gt)
    valid = valid_p & valid_g
    inter, union = int((b & g & valid).sum()), int(((b | g) & valid).sum())
    return inter / union if union else 1.0


def saliency_iou(proxy: np.ndarray, saliency: np.ndarray) -> float:
    """The baseline: IoU of the proxy's foreground with the Otsu-binarized saliency map."""
    b, valid = foreground(proxy)
    h = threshold_mask(saliency.astype(np.float32) / 255.0, threshold="otsu")
    inter, union = int((b & h & valid).sum()), int(((b | h) & valid).sum())
    return inter / union if union else 0.0


def saliency_quality(saliency: np.ndarray, gt: np.ndarray) -> float:
    """F-measure of the Otsu-binarized saliency map against the ground-truth foreground."""
    g, valid = foreground(gt)
    h = threshold_mask(saliency.astype(np.float32) / 255.0, threshold="otsu")
    return float(f_measure(g, h, valid=valid))


def per_sample(st: MaskStore, proxy: str, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Truth (mIoU, foreground IoU), saliency quality and the baselines for each sample."""
    c = st.num_classes
    out = {k: np.full(len(indices), np.nan) for k in ("miou", "fg_iou", "saliency_f", "saliency_iou", "tags")}
    for row, i in enumerate(indices):
        p, g, s = st.map(proxy, int(i)), st.map("gt", int(i)), st.map("saliency", int(i))
        out["miou"][row] = proxy_miou(p, g, c)
        out["fg_iou"][row] = foreground_iou(p, g)
        out["tags"][row] = -float(st.tags[i].sum())  # more tags, worse proxies: the score is minus the count
        if s is not None:
            out["saliency_f"][row] = saliency_quality(s, g)
            out["saliency_iou"][row] = saliency_iou(p, s)
    return out


# ------------------------------------------------------------------------------------------
# Judging a score
# ------------------------------------------------------------------------------------------
def judge(score: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Spearman, AUROC for bad proxies, kept quality per tau and at 50 %, per saliency quality."""
    ok = np.isfinite(score)
    s, miou, fg, sal_f = score[ok], truth["miou"][ok], truth["fg_iou"][ok], truth["saliency_f"][ok]
    half = np.argsort(-s, kind="stable")[: max(1, len(s) // 2)]
    poor, good = sal_f < 0.5, sal_f >= 0.8
    taus = []
    for tau in TABLE_IV_TAUS:
        kept = s >= tau
        taus.append({"tau": tau, "kept": int(kept.sum()),
                     "mean_miou": float(miou[kept].mean()) if kept.any() else None})
    return {
        "n": int(ok.sum()),
        "constant": bool(np.ptp(s) == 0) if len(s) else True,
        "spearman_miou": spearman(s, miou),
        "spearman_fg_iou": spearman(s, fg),
        "auroc_bad": auroc(-s, miou < BAD_BELOW),
        "mean_miou_all": float(miou.mean()),
        "mean_miou_best_half": float(miou[half].mean()),
        "gain_best_half": float(miou[half].mean() - miou.mean()),
        # coverage: images with more classes carry more object instances for a retraining
        "tags_best_half": float(-truth["tags"][ok][half].mean()),
        "taus": taus,
        "spearman_miou_poor_saliency": spearman(s[poor], miou[poor]) if poor.sum() > 2 else None,
        "spearman_fg_iou_poor_saliency": spearman(s[poor], fg[poor]) if poor.sum() > 2 else None,
        "spearman_fg_iou_good_saliency": spearman(s[good], fg[good]) if good.sum() > 2 else None,
        "poor_saliency_fraction": float(poor.mean()),
    }


def score_table(st: MaskStore, proxy: str, indices: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every score column of the proxy set, then the baselines."""
    rows: dict[str, Any] = {}
    suffix = "" if proxy == "proxy" else f":{proxy}"
    for name in st.score_names():
        if not name.endswith(suffix) or (suffix == "" and ":" in name):
            continue
        rows[name] = judge(st.score(name)[indices].astype(np.float64), truth)
    rows["baseline: saliency IoU"] = judge(truth["saliency_iou"], truth)
    rows["baseline: - number of tags"] = judge(truth["tags"], truth)
    return rows


def markdown(rows: dict[str, Any], facts: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"

    lines = [f"{facts['train']} train proxies ({facts['proxy']}), mean mIoU {f(facts['mean_miou'])}, "
             f"{100 * facts['bad_fraction']:.0f} % with mIoU < {BAD_BELOW}; saliency F < 0.5 on "
             f"{100 * facts['poor_saliency_fraction']:.0f} %", "",
             "| score | Spearman mIoU | Spearman fg IoU | AUROC mIoU<0.5 | kept half: mIoU (gain) | "
             "Spearman mIoU, saliency poor | Spearman fg IoU, saliency poor / good | kept half: mean tags |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        flag = " (constant)" if r["constant"] else ""
        lines.append(f"| {name}{flag} | {f(r['spearman_miou'])} | {f(r['spearman_fg_iou'])} | {f(r['auroc_bad'])} | "
                     f"{f(r['mean_miou_best_half'])} ({100 * r['gain_best_half']:+.1f}) | "
                     f"{f(r['spearman_miou_poor_saliency'])} | "
                     f"{f(r['spearman_fg_iou_poor_saliency'])} / {f(r['spearman_fg_iou_good_saliency'])} | "
                     f"{r['tags_best_half']:.2f} |")
    lines += ["", "Kept set's mean mIoU (kept count) at the paper's taus:", "",
              "| score | " + " | ".join(f"tau {t:g}" for t in TABLE_IV_TAUS) + " |",
              "| --- |" + " --- |" * len(TABLE_IV_TAUS)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{f(t['mean_miou'])} ({t['kept']})" for t in r["taus"]) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# The pipeline (cached)
# ------------------------------------------------------------------------------------------
def build_store(workdir: Path, args: argparse.Namespace) -> Path:
    from salcurate.data.demo_data import DemoConfig, make_demo_dataset
    from salcurate.data.importing import ImportConfig
    from salcurate.data.importing import run as import_run

    store = workdir / "masks.h5"
    if store.exists():
        return store
    if args.from_store is not None:  # a copy of a store built before (the root and its parts)
        copy_store(args.from_store, store)
        return store
    voc = workdir / "voc"
    total = args.train + args.val
    t0 = time.time()
    make_demo_dataset(voc, DemoConfig(num_images=total, size=args.size, seed=args.seed,
                                      val_fraction=args.val / total, num_classes=args.classes))
    import_run(ImportConfig(layout="voc", root=str(voc), output=str(store), splits=("train", "val"),
                            saliency_dir=str(voc / "Saliency"), tags_from_gt=True,
                            class_names_file=str(voc / "class_names.txt")))
    print(f"data set and store: {time.time() - t0:.0f} s", flush=True)
    return store


def run_pipeline(store: Path, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    from salcurate.scoring.coarse import CoarseConfig
    from salcurate.scoring.coarse import run as coarse_run
    from salcurate.training.pseudo_label import PseudoLabelConfig
    from salcurate.training.pseudo_label import run as pseudo_run

    seconds: dict[str, float] = {}
    with MaskStore(store) as st:
        have_proxy = args.proxy in st.proxy_names()
        have_sc = proxy_column("sc", args.proxy) in st.score_names()
    if not have_proxy:
        t0 = time.time()
        res = pseudo_run(PseudoLabelConfig(store=str(store), proxy=args.proxy, output=str(workdir / "pseudo-label"),
                                           backbone=args.backbone, backbone_weights="none", input_size=args.input_size,
                                           epochs=args.epochs, lr=args.lr, head_lr_mult=args.head_lr_mult,
                                           batch_size=args.batch_size,
                                           scales=tuple(args.scales), cam_max_side=args.cam_max_side,
                                           bg_threshold=args.bg_threshold, seed=args.seed))
        seconds["pseudo-label"] = time.time() - t0
        print(f"pseudo-label: {seconds['pseudo-label']:.0f} s; {json.dumps(res.to_dict(), default=str)[:400]}",
              flush=True)
    if not have_sc:
        t0 = time.time()
        coarse_run(CoarseConfig(store=str(store), proxy=args.proxy))
        seconds["score-coarse"] = time.time() - t0
    if args.fine:
        from salcurate.scoring.fine import ScoreFineConfig
        from salcurate.scoring.fine import run as fine_run
        from salcurate.scoring.synthesis import SynthesisConfig
        from salcurate.training.scorer import TrainScorerConfig
        from salcurate.training.scorer import run as train_run

        with MaskStore(store) as st:
            have_sf = proxy_column("sf", args.proxy) in st.score_names()
        if not have_sf:
            t0 = time.time()
            scorer = workdir / "scorer.pt"
            if not scorer.exists():
                train_run(TrainScorerConfig(store=str(store), proxy=args.proxy, output=str(scorer), epochs=10,
                                            input_size=64, width=32, channels=48, hidden=32, lr=1e-3,
                                            batch_size=32, synthesis=SynthesisConfig(scale=0.3)))
            fine_run(ScoreFineConfig(store=str(store), proxy=args.proxy, scorer=str(scorer)))
            seconds["train-scorer + score-fine"] = time.time() - t0
    if args.evidence:
        from salcurate.scoring.evidence import EvidenceConfig
        from salcurate.scoring.evidence import run as evidence_run

        t0 = time.time()
        res = evidence_run(EvidenceConfig(store=str(store), proxy=args.proxy))
        if res.computed:
            seconds["score-evidence"] = time.time() - t0
    if args.model:
        from salcurate.training.folds import run as model_run

        t0 = time.time()
        res = model_run(ScoreModelConfig(store=str(store), proxy=args.proxy, output=str(workdir / "score-model"),
                                         iterations=args.model_iterations, overwrite=True))
        if not res.nothing_to_do:
            seconds["score-model"] = time.time() - t0
    if args.combined:
        from salcurate.scoring.combined import CombinedConfig
        from salcurate.scoring.combined import run as combined_run

        combined_run(CombinedConfig(store=str(store), proxy=args.proxy, components=args.combined_components,
                                    overwrite=True))
    if args.fine_q:
        seconds.update(run_fine_q(store, workdir, args))
    return seconds


def fine_q_variants(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--fine-q-variants labels:q mask:q`` as ``[(input, target), ...]``."""
    out = []
    for spec in args.fine_q_variants:
        kind, _, target = spec.partition(":")
        out.append((kind, target or "q"))
    return out


def run_fine_q(store: Path, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    """train-scorer with a target column (and label input) + score-fine, for each variant; skipped when done."""
    from salcurate.scoring.fine import ScoreFineConfig, ScorerInput, ScorerSpec
    from salcurate.scoring.fine import run as fine_run
    from salcurate.scoring.synthesis import SynthesisConfig
    from salcurate.training.scorer import TrainScorerConfig
    from salcurate.training.scorer import run as train_run

    seconds: dict[str, float] = {}
    for kind, target in fine_q_variants(args):
        p_base, _ = ScorerSpec(ScorerInput(kind), target).column_bases()
        with MaskStore(store) as st:
            if proxy_column(p_base, args.proxy) in st.score_names():
                continue
        scorer = workdir / f"scorer-{kind}-{target}.pt"
        t0 = time.time()
        res = train_run(TrainScorerConfig(store=str(store), proxy=args.proxy, output=str(scorer),
                                          epochs=args.fine_q_epochs, input_size=64, width=32, channels=48, hidden=32,
                                          lr=1e-3, batch_size=32, target=target, scorer_input=kind,
                                          synthesis=SynthesisConfig(val_fraction=args.fine_q_holdout)))
        t1 = time.time()
        fine_run(ScoreFineConfig(store=str(store), proxy=args.proxy, scorer=str(scorer)))
        seconds[f"train-scorer {kind}:{target}"] = t1 - t0
        seconds[f"score-fine {kind}:{target}"] = time.time() - t1
        print(f"{kind}:{target}: {res.items} items, {t1 - t0:.0f} s training, {time.time() - t1:.0f} s scoring; "
              f"last epoch {json.dumps(res.final)}", flush=True)
    return seconds


def held_out(st: MaskStore, args: argparse.Namespace) -> np.ndarray:
    """(N,) bool: the images every ``--fine-q`` scorer held out (its validation split: same seed, same fraction)."""
    from salcurate.scoring import synthesis

    table = np.stack([np.zeros(len(st), np.int64), np.arange(len(st)), np.full(len(st), -1), np.zeros(len(st))],
                     axis=1).astype(np.int64)
    _, val_rows = synthesis.split_train_val(table, len(st), args.fine_q_holdout, 0)  # train-scorer's default seed
    out = np.zeros(len(st), bool)
    out[val_rows[:, 1]] = True
    return out


def candidate_rows(st: MaskStore, proxy: str, indices: np.ndarray, truth: dict[str, np.ndarray],
                   specs: list[str]) -> dict[str, Any]:
    """Combined scores computed here (not stored) for other weights: ``"ac=1,ce=1,tags=1"``."""
    from salcurate.scoring.combined import TAGS, combined_score, parse_components, tag_prior

    rows: dict[str, Any] = {}
    prior = tag_prior(st.tags[indices].astype(bool))
    for spec in specs:
        weights = parse_components(spec)
        comps = {name: (prior if name == TAGS else st.score(proxy_column(name, proxy))[indices].astype(np.float64))
                 for name in weights}
        comps = {k: np.clip(v, 0.0, 1.0) for k, v in comps.items()}
        rows[f"q candidate: {spec}"] = judge(combined_score(comps, weights=weights), truth)
    return rows


#: ``--reliability`` variants: q with AC weighted by the reference reliability ``hr`` of each image.
RELIABILITY_VARIANTS = ("pow", "pow2", "mix", "pow-mean", "mix-mean")


def reliability_score(ac: np.ndarray, ce: np.ndarray, prior: np.ndarray, hr: np.ndarray, kind: str) -> np.ndarray:
    """q with AC counting as much as the saliency reference can be trusted (``hr`` per image).

    All ``(N,)`` in [0, 1] (prior = 1 / #tags) -> ``(N,)``; eps = 0.001 as in q.

    * ``pow``: the weighted geometric mean with AC's weight hr: exp((hr log AC + log CE + log prior) / (hr + 2)),
      what ``score-combined --reliability hr`` stores;
    * ``pow2``: the same with weight hr^2 (AC fades faster as H gets worse);
    * ``mix``: AC replaced by hr AC + (1 - hr) CE (where H is wrong, trust the classifier), then q's
      equal-weight geometric mean of the three;
    * ``pow-mean``, ``mix-mean``: controls, the same with hr replaced by its mean over the images
      (AC down-weighted by the same amount everywhere: what per-image reliability adds is the difference).
    """
    from salcurate.scoring.combined import combined_score

    eps = 1e-3
    if kind.endswith("-mean"):
        kind, hr = kind[: -len("-mean")], np.full_like(hr, float(np.nanmean(hr)))
    lc, lp = (np.log(np.maximum(x, eps)) for x in (ce, prior))
    if kind in ("pow", "pow2"):
        return combined_score({"ac": ac, "ce": ce, "tags": prior}, weights={"ac": 1, "ce": 1, "tags": 1},
                              scales={"ac": hr if kind == "pow" else hr ** 2})
    if kind == "mix":
        return np.exp((np.log(np.maximum(hr * ac + (1 - hr) * ce, eps)) + lc + lp) / 3)
    raise ValueError(f"unknown reliability variant {kind!r}; one of {', '.join(RELIABILITY_VARIANTS)}")


def reliability_rows(st: MaskStore, proxy: str, indices: np.ndarray, truth: dict[str, np.ndarray],
                     kinds: list[str]) -> dict[str, Any]:
    """``--reliability``: the variants of :func:`reliability_score` (not stored), judged like the columns."""
    from salcurate.scoring.combined import tag_prior

    if not kinds:
        return {}
    cols = {k: np.clip(st.score(proxy_column(k, proxy))[indices].astype(np.float64), 0.0, 1.0)
            for k in ("ac", "ce", "hr")}
    prior = tag_prior(st.tags[indices].astype(bool))
    return {f"q reliability: {k}": judge(reliability_score(cols["ac"], cols["ce"], prior, cols["hr"], k), truth)
            for k in kinds}


def _facts(truth: dict[str, np.ndarray], n: int, args: argparse.Namespace, seconds: dict[str, float]) -> dict[str, Any]:
    return {"train": int(n), "proxy": args.proxy, "mean_miou": float(truth["miou"].mean()),
            "bad_fraction": float((truth["miou"] < BAD_BELOW).mean()),
            "poor_saliency_fraction": float((truth["saliency_f"] < 0.5).mean()), "seconds": seconds,
            "settings": {k: str(v) for k, v in vars(args).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/realistic"))
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--size", type=int, default=128, help="nominal image side (the demo's is smaller)")
    ap.add_argument("--classes", type=int, default=16, help="foreground classes (look-alike pairs)")
    ap.add_argument("--seed", type=int, default=7, help="the data set's seed (the demo uses 0)")
    ap.add_argument("--proxy", default="cam")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--input-size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--head-lr-mult", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--cam-max-side", type=int, default=64)
    ap.add_argument("--bg-threshold", type=float, default=0.45)
    ap.add_argument("--fine", action="store_true", help="also train a small scorer and report SF")
    ap.add_argument("--evidence", action="store_true", help="also run score-evidence (class evidence)")
    ap.add_argument("--model", action="store_true", help="also run score-model (K-fold agreement, defaults)")
    ap.add_argument("--model-iterations", type=int, default=ScoreModelConfig.iterations,
                    help="score-model's training iterations per fold")
    ap.add_argument("--combined", action="store_true", help="also run score-combined (the default score q)")
    ap.add_argument("--combined-components", default=None, help="score-combined's components (default: its own)")
    ap.add_argument("--candidates", nargs="*", default=[], help="other combinations to report, not stored")
    ap.add_argument("--reliability", nargs="*", default=[], choices=RELIABILITY_VARIANTS,
                    help="also report q with AC weighted by score-evidence's hr (not stored): "
                         + ", ".join(RELIABILITY_VARIANTS))
    ap.add_argument("--from-store", type=Path, default=None,
                    help="start from a copy of this store (made with copy_store) instead of building one")
    ap.add_argument("--fine-q", action="store_true",
                    help="also train scorers on a score column (q) with label or mask input, and score with them")
    ap.add_argument("--fine-q-variants", nargs="+", default=["labels:q", "mask:q"], help="INPUT:TARGET per scorer")
    ap.add_argument("--fine-q-epochs", type=int, default=8)
    ap.add_argument("--fine-q-holdout", type=float, default=0.5, help="fraction of images each scorer holds out")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = build_store(args.workdir, args)
    seconds = run_pipeline(store, args.workdir, args)
    held: dict[str, Any] = {}
    with MaskStore(store) as st:
        usable = (st.splits == "train") & st.has_map(args.proxy) & st.has_map("gt")
        train = np.flatnonzero(usable)
        truth = per_sample(st, args.proxy, train)
        rows = score_table(st, args.proxy, train, truth)
        rows.update(candidate_rows(st, args.proxy, train, truth, args.candidates))
        rows.update(reliability_rows(st, args.proxy, train, truth, args.reliability))
        if args.fine_q:
            hidx = np.flatnonzero(held_out(st, args)[train])
            htruth = {k: v[hidx] for k, v in truth.items()}
            held = {"rows": score_table(st, args.proxy, train[hidx], htruth),
                    "facts": _facts(htruth, len(hidx), args, {})}
            q = st.score(proxy_column("q", args.proxy))[train[hidx]].astype(np.float64)
            held["spearman_with_q"] = {
                name: spearman(st.score(name)[train[hidx]].astype(np.float64), q)
                for name in held["rows"] if name.startswith(("p_", "sf_"))}
    facts = _facts(truth, len(train), args, seconds)
    text = markdown(rows, facts)
    if held:
        text += ("\nOn the held-out train proxies alone (no --fine-q scorer saw them):\n\n"
                 + markdown(held["rows"], held["facts"])
                 + "\nSpearman of each with q there: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in held["spearman_with_q"].items()) + "\n")
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "scores": rows, "held_out": held}, indent=2,
                                        default=float) + "\n")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
