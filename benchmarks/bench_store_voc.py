"""Benchmark of the mask store on VOC-sized data with saliency maps (the data bench_coarse.py and bench_report.py use).

Builds N synthetic VOC-sized samples (500x375 JPEG image made from scikit-image's bundled
photos, PNG proxy, PNG ground truth, PNG saliency map) in VOC layout, then measures:

* import throughput (``salcurate import voc``'s library function, all cores);
* store size against the source files' bytes;
* random read of one sample's image and proxy mask (raw bytes + pixels, and decoded);
* sequential read of all proxy masks;
* peak memory of the import, for several N (it should be flat in N).

Usage::

    .venv/bin/python benchmarks/bench_store_voc.py --n 10582 --workdir bench-out/store

The generated source data is kept in ``--workdir`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 375, 500


def _photos() -> list[np.ndarray]:
    import skimage.data as d

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"):
        img = getattr(d, name)()
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(img)
    return out


_PHOTOS: list[np.ndarray] = []


def _make_sample(args: tuple[Path, int]) -> int:
    root, i = args
    global _PHOTOS
    if not _PHOTOS:
        _PHOTOS = _photos()
    rng = np.random.default_rng(i)
    photo = _PHOTOS[i % len(_PHOTOS)]
    ph, pw = photo.shape[:2]
    y, x = rng.integers(0, max(1, ph - H // 2)), rng.integers(0, max(1, pw - W // 2))
    crop = Image.fromarray(photo[y:, x:]).resize((W, H), Image.BILINEAR)
    img = np.asarray(crop, dtype=np.int16)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(root / "JPEGImages" / f"{i:06d}.jpg", quality=90)

    yy, xx = np.mgrid[0:H, 0:W]
    gt = np.zeros((H, W), np.uint8)
    sal = np.zeros((H, W), np.float32)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(60, H - 60), rng.uniform(60, W - 60)
        ry, rx = rng.uniform(30, 120), rng.uniform(30, 160)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        gt[inside] = rng.integers(1, 21)
        sal += np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** 2)
    from scipy import ndimage

    edge = ndimage.binary_dilation(ndimage.sobel(gt.astype(np.int16)) != 0, iterations=2)
    gt_png = gt.copy()
    gt_png[edge] = 255
    proxy = ndimage.grey_dilation(gt, size=int(rng.integers(1, 12))) if rng.random() < 0.5 else gt
    from salcurate.imageio import write_grey_png, write_label_png

    write_label_png(root / "SegmentationClassAug" / f"{i:06d}.png", gt_png)
    write_label_png(root / "Proxy" / f"{i:06d}.png", proxy)
    write_grey_png(root / "Saliency" / f"{i:06d}.png", np.clip(sal * 255, 0, 255).astype(np.uint8))
    return i


def make_source(root: Path, n: int) -> None:
    for d in ("JPEGImages", "SegmentationClassAug", "Proxy", "Saliency", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    have = {p.stem for p in (root / "JPEGImages").glob("*.jpg")} & {p.stem for p in (root / "Saliency").glob("*.png")}
    todo = [i for i in range(n) if f"{i:06d}" not in have]
    if todo:
        print(f"generating {len(todo)} samples in {root} ...", file=sys.stderr)
        with Pool(os.cpu_count()) as pool:
            for k, _ in enumerate(pool.imap_unordered(_make_sample, [(root, i) for i in todo], chunksize=16)):
                if k % 1000 == 0:
                    print(f"  {k}/{len(todo)}", file=sys.stderr)
    for m in sorted({1000, 3000, n}):
        if m <= n:
            (root / "ImageSets/Segmentation" / f"first{m}.txt").write_text("".join(f"{i:06d}\n" for i in range(m)))


def source_bytes(root: Path, n: int) -> int:
    total = 0
    for i in range(n):
        s = f"{i:06d}"
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClassAug", "png"), ("Proxy", "png"), ("Saliency", "png")):
            total += (root / sub / f"{s}.{ext}").stat().st_size
    return total


def run_import(root: Path, out: Path, split: str) -> dict[str, float]:
    """Import in a child process so its peak RSS is its own."""
    code = f"""
import json, resource, sys, time
from salcurate.data.importing import ImportConfig, run as import_dataset
cfg = ImportConfig(layout="voc", root={str(root)!r}, output={str(out)!r}, splits=({split!r},),
                   pseudo_dir={str(root / 'Proxy')!r}, saliency_dir={str(root / 'Saliency')!r},
                   tags_from_gt=True, overwrite=True)
t = time.perf_counter(); s = import_dataset(cfg); dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"n": s.num_imported, "seconds": dt, "peak_rss_mb": rss}}))
"""
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_reads(store_path: Path, repeats: int = 2000) -> dict[str, float]:
    from salcurate.data.store import MaskStore

    with MaskStore(store_path) as st:
        n = len(st)
        rng = np.random.default_rng(0)
        idx = rng.integers(0, n, repeats)
        raw, dec, img_only = [], [], []
        for i in idx:
            t = time.perf_counter()
            st.image_bytes(int(i))
            st.map("proxy", int(i))
            raw.append(time.perf_counter() - t)
        for i in idx[:500]:
            t = time.perf_counter()
            st.image(int(i))
            st.map("proxy", int(i))
            dec.append(time.perf_counter() - t)
            t = time.perf_counter()
            st.image(int(i))
            img_only.append(time.perf_counter() - t)
        t = time.perf_counter()
        count = sum(1 for _, m in st.iter_maps("proxy") if m is not None)
        seq = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(min(n, 2000)):
            st.map("proxy", i)
        seq_single = time.perf_counter() - t
    return {
        "random_read_raw_median_ms": statistics.median(raw) * 1e3,
        "random_read_raw_p90_ms": float(np.percentile(raw, 90) * 1e3),
        "random_read_decoded_median_ms": statistics.median(dec) * 1e3,
        "decode_image_only_median_ms": statistics.median(img_only) * 1e3,
        "sequential_masks_per_s": count / seq,
        "sequential_one_by_one_masks_per_s": min(n, 2000) / seq_single,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10582)
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/store"))
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[1000, 3000])
    args = ap.parse_args()
    src = args.workdir / "voc"
    t = time.perf_counter()
    make_source(src, args.n)
    print(f"source ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    machine = f"{platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    results: dict[str, object] = {"n": args.n, "machine": machine, "python": platform.python_version()}
    store = args.workdir / "masks.h5"
    imp = run_import(src, store, f"first{args.n}")
    results["import_samples_per_s"] = imp["n"] / imp["seconds"]
    results["import_seconds"] = imp["seconds"]
    sb = source_bytes(src, args.n)
    results["source_mb"] = sb / 2**20
    results["store_mb"] = store.stat().st_size / 2**20
    results["size_ratio"] = store.stat().st_size / sb
    results["peak_rss_mb"] = {args.n: imp["peak_rss_mb"]}
    for m in args.memory_sizes:
        if m < args.n:
            r = run_import(src, args.workdir / f"masks{m}.h5", f"first{m}")
            results["peak_rss_mb"][m] = r["peak_rss_mb"]  # type: ignore[index]
            (args.workdir / f"masks{m}.h5").unlink()
    results.update(bench_reads(store))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
