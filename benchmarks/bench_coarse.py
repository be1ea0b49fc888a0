"""Benchmark of ``score-coarse`` (issue: coarse mask scoring).

Uses the VOC-sized synthetic data of ``bench_store_voc.py`` (run that first; it leaves the source
files and a 10,582-sample store in ``--workdir``) and measures:

* masks per second without CRF, saliency maps from the store, with 1 and 2 workers (the whole
  command: reading, scoring, the work area and the final transaction);
* per-image CRF time of salcurate's ``crf_refine`` against calling pydensecrf directly on the
  same images and unaries (the wrapping's overhead);
* peak memory (main process and workers) for two dataset sizes.

Usage::

    .venv/bin/python benchmarks/bench_coarse.py --workdir bench-out/store
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run_scoring(store: Path, workers: int) -> dict[str, float]:
    """score-coarse in a child process, for its own peak memory (self and worker children)."""
    code = f"""
import json, resource, time
from salcurate.scoring.coarse import CoarseConfig, run
t = time.perf_counter()
s = run(CoarseConfig(store={str(store)!r}, workers={workers}, overwrite=True))
dt = time.perf_counter() - t
print(json.dumps({{"n": s.computed, "seconds": dt,
    "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_crf(store: Path, n: int = 20, repeats: int = 3) -> dict[str, float]:
    import pydensecrf.densecrf as dcrf

    from salcurate.data.store import MaskStore
    from salcurate.scoring.reference import CrfParams, adaptive_threshold, calibrate, crf_refine

    p = CrfParams()
    ours, direct, diffs = [], [], []
    with MaskStore(store) as st:
        for i in range(n):
            image = np.ascontiguousarray(st.image(i))
            sal = st.map("saliency", i).astype(np.float32) / 255.0
            prob = calibrate(sal, adaptive_threshold(sal))
            h, w = prob.shape
            for _ in range(repeats):
                t = time.perf_counter()
                q_ours = crf_refine(image, prob, iterations=p.iterations, gaussian_sxy=p.gaussian_sxy,
                                    gaussian_compat=p.gaussian_compat, bilateral_sxy=p.bilateral_sxy,
                                    bilateral_srgb=p.bilateral_srgb, bilateral_compat=p.bilateral_compat)
                ours.append(time.perf_counter() - t)
                # pydensecrf called directly, as its README shows
                t = time.perf_counter()
                eps = 1e-6
                probs = np.stack([1.0 - prob, prob]).clip(eps, 1.0 - eps)
                unary = np.ascontiguousarray(-np.log(probs).reshape(2, -1), dtype=np.float32)
                d = dcrf.DenseCRF2D(w, h, 2)
                d.setUnaryEnergy(unary)
                d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
                d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=image,
                                       compat=p.bilateral_compat)
                q = np.array(d.inference(p.iterations)).reshape(2, h, w)[1]
                direct.append(time.perf_counter() - t)
                diffs.append(float(np.abs(q - q_ours).max()))
    mo, md = statistics.median(ours), statistics.median(direct)
    return {"crf_salcurate_ms": mo * 1e3, "crf_direct_ms": md * 1e3, "crf_overhead_pct": (mo / md - 1) * 100,
            "crf_max_abs_diff": max(diffs), "crf_images": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/store"))
    ap.add_argument("--small", type=int, default=3000, help="samples in the small store (scaling, memory)")
    args = ap.parse_args()
    full_src = args.workdir / "masks.h5"
    if not full_src.exists():
        sys.exit(f"{full_src} not found: run benchmarks/bench_store_voc.py first")
    out = args.workdir / "coarse"
    out.mkdir(exist_ok=True)
    small = out / "small.h5"
    if not small.exists():
        from salcurate.data.importing import ImportConfig
        from salcurate.data.importing import run as import_dataset

        voc = args.workdir / "voc"
        import_dataset(ImportConfig(layout="voc", root=str(voc), output=str(small), splits=(f"first{args.small}",),
                                    pseudo_dir=str(voc / "Proxy"), saliency_dir=str(voc / "Saliency"),
                                    tags_from_gt=True))
    results: dict[str, object] = {}
    for name, src, workers in (("small_w1", small, 1), ("small_w2", small, 2), ("full_w2", full_src, 2)):
        work = out / f"{name}.h5"
        from salcurate.data.store import copy_store

        copy_store(src, work)
        r = run_scoring(work, workers)
        r["masks_per_s"] = r["n"] / r["seconds"]
        results[name] = r
        work.unlink()
        print(name, json.dumps(r), file=sys.stderr)
    results["scaling_1_to_2_workers"] = results["small_w2"]["masks_per_s"] / results["small_w1"]["masks_per_s"]  # type: ignore[index]
    results.update(bench_crf(small))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
