"""Benchmark of the mask store at COCO scale (issue 13: schema v2, writes that cost what they change).

Builds N COCO-sized synthetic samples cheaply: a pool of ``--pool`` distinct generated samples
(a 640 x 480 JPEG image, quality 90, cut from scikit-image's bundled photos with 1 to 5 shapes
painted on it; an 8-bit palette PNG proxy of the same shapes over 81 classes, 80 + background)
is written once, and the N samples of a VOC-style tree (``JPEGImages/``, ``Proxy/``,
``ImageSets/Segmentation/train.txt``, ``tags.csv``, ``classes.txt``) are hard links to the pool
files, so the tree costs no disk.  Then it measures:

* the import (``salcurate import voc``'s library function, in a child process): seconds,
  samples/s, and the child's resident memory sampled every 0.5 s (at 10 %, 50 % and 100 % of
  the run, and the peak): it should stay flat;
* a score-column commit (a transaction writing one ``(N,)`` column), median of 5;
* ``select`` writing a selection (top fraction 0.5 of that column): the library call, median of
  5, and the ``salcurate select`` process once;
* ``info``: the library call, median of 5, and the ``salcurate info`` process once;
* random read of one sample (image bytes + decoded proxy map, store open): median and p95;
* the store's size (root + parts) against the source files (each of the N images and proxies
  counted at its full size, though hard-linked).

The results go to ``WORKDIR/store-N.json``.  Unless ``--keep``, the store and the sample tree are
deleted afterwards; the pool and the JSON stay.

Usage::

    .venv/bin/python benchmarks/bench_store.py --n 118287 --workdir bench-out/store
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

H, W = 480, 640
NUM_CLASSES = 80  # foreground classes, as COCO; 81 with the background
GOALS = {"select_s": 0.2, "score_commit_s": 1.0, "info_s": 1.0, "read_median_ms": 3.0, "size_ratio": 1.05}
SCORE = "bench_score"  # the column select ranks by
COLUMN = "bench_column"  # the column the commit benchmark rewrites
SELECTION = "bench_top0.5"


# --------------------------------------------------------------------------------------
# Source data: a pool of generated samples, and a tree of hard links to it
# --------------------------------------------------------------------------------------
def _photos() -> list[np.ndarray]:
    import skimage.data as d

    return [getattr(d, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")]


def _make_pool_sample(rng: np.random.Generator, photos: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One generated sample: ``(H, W, 3)`` uint8 image and ``(H, W)`` uint8 labels 0..80."""
    from PIL import Image, ImageDraw

    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    y, x = int(rng.integers(0, ph // 3)), int(rng.integers(0, pw // 3))
    crop = Image.fromarray(photo[y:, x:]).resize((W, H), Image.BILINEAR)
    base = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        base = base[:, ::-1]
    labels = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(labels)
    for _ in range(int(rng.integers(1, 6))):
        c = int(rng.integers(1, NUM_CLASSES + 1))
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        rx, ry = rng.uniform(20, 200), rng.uniform(20, 160)
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=c)
        elif kind == 1:
            draw.rectangle(box, fill=c)
        else:  # a star-convex polygon
            k = int(rng.integers(5, 12))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(0.4, 1.0, k)
            draw.polygon([(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)], fill=c)
    lab = np.asarray(labels, dtype=np.uint8)
    colours = np.random.default_rng(7).uniform(0, 255, (NUM_CLASSES + 1, 3)).astype(np.float32)
    fg = (lab > 0)[..., None]
    img = np.where(fg, 0.5 * base + 0.5 * colours[lab], base)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img, lab


def make_pool(folder: Path, size: int) -> list[dict[str, Any]]:
    """Write ``size`` generated samples to ``folder`` once (reused when there); their files, sizes and tags."""
    index = folder / "pool.json"
    if index.is_file():
        pool = json.loads(index.read_text())
        if len(pool) == size and all((folder / p[k]).is_file() for p in pool for k in ("image", "proxy")):
            return pool
    from PIL import Image

    from salcurate.imageio import write_label_png

    folder.mkdir(parents=True, exist_ok=True)
    photos = _photos()
    rng = np.random.default_rng(0)
    pool = []
    for k in range(size):
        img, lab = _make_pool_sample(rng, photos)
        image, proxy = folder / f"{k:03d}.jpg", folder / f"{k:03d}.png"
        Image.fromarray(img).save(image, quality=90)
        write_label_png(proxy, lab)
        pool.append({"image": image.name, "proxy": proxy.name, "image_bytes": image.stat().st_size,
                     "proxy_bytes": proxy.stat().st_size, "tags": [int(c) for c in np.unique(lab) if c]})
    index.write_text(json.dumps(pool))
    return pool


def make_tree(root: Path, pool_dir: Path, pool: list[dict[str, Any]], n: int) -> tuple[list[int], int]:
    """A VOC-style tree of ``n`` samples, hard links to the pool's files; the pool index of each
    sample and the source bytes (every sample's files at full size)."""
    if root.exists():
        shutil.rmtree(root)
    images, proxies, lists = root / "JPEGImages", root / "Proxy", root / "ImageSets" / "Segmentation"
    for d in (images, proxies, lists):
        d.mkdir(parents=True)
    which = np.random.default_rng(1).integers(0, len(pool), n).tolist()
    ids = [f"{i:012d}" for i in range(n)]
    for sample_id, k in zip(ids, which):
        os.link(pool_dir / pool[k]["image"], images / f"{sample_id}.jpg")
        os.link(pool_dir / pool[k]["proxy"], proxies / f"{sample_id}.png")
    (lists / "train.txt").write_text("".join(f"{s}\n" for s in ids))
    (root / "tags.csv").write_text("id,tags\n" + "".join(
        f"{s},{' '.join(map(str, pool[k]['tags']))}\n" for s, k in zip(ids, which)))
    (root / "classes.txt").write_text("background\n" + "".join(f"class{c:02d}\n" for c in range(1, NUM_CLASSES + 1)))
    source = sum(pool[k]["image_bytes"] + pool[k]["proxy_bytes"] for k in which)
    return which, source


# --------------------------------------------------------------------------------------
# The import, in a child process whose memory is sampled
# --------------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_import(root: Path, store: Path, interval: float = 0.5) -> dict[str, Any]:
    """Import the tree in a child process; its time, peak memory and memory over time."""
    code = f"""
import json, resource, time
from salcurate.data.importing import ImportConfig, run
cfg = ImportConfig(layout="voc", root={str(root)!r}, output={str(store)!r}, splits=("train",),
                   pseudo_dir={str(root / "Proxy")!r}, tags_file={str(root / "tags.csv")!r},
                   class_names_file={str(root / "classes.txt")!r}, overwrite=True)
t = time.perf_counter(); r = run(cfg); dt = time.perf_counter() - t
print(json.dumps({{"n": r.num_imported, "seconds": dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err, text=True)
        samples: list[tuple[float, float]] = []
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - start, rss))
            time.sleep(interval)
        out = proc.stdout.read() if proc.stdout else ""
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"error: the import failed (exit {proc.returncode}): {err.read()[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    if samples:
        total = samples[-1][0]

        def at(fraction: float) -> float:
            return min(samples, key=lambda s: abs(s[0] - fraction * total))[1]

        result["rss_mb_at"] = {"10%": at(0.1), "50%": at(0.5), "100%": samples[-1][1]}
        result["rss_sampled_peak_mb"] = max(s[1] for s in samples)
        step = max(1, len(samples) // 20)
        result["rss_timeline"] = [[round(t, 1), round(r, 1)] for t, r in samples[::step]]
    return result


# --------------------------------------------------------------------------------------
# Writes, info and reads on the imported store
# --------------------------------------------------------------------------------------
def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _process_seconds(args: Sequence[str]) -> float:
    """Wall seconds of ``python -m salcurate ARGS`` (start-up included)."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "salcurate", *args], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"error: `salcurate {' '.join(args)}` failed (exit {res.returncode}): {res.stderr[-2000:]}")
    return dt


def bench_writes(store: Path, repeats: int) -> dict[str, Any]:
    from salcurate.data.info import InfoConfig
    from salcurate.data.info import run as info
    from salcurate.data.store import MaskStore, transaction
    from salcurate.selection.select import SelectConfig
    from salcurate.selection.select import run as select

    with MaskStore(store) as st:
        n = len(st)
    rng = np.random.default_rng(2)

    def commit(name: str, overwrite: bool) -> None:
        with transaction(store, command="bench-store", config={"bench": name}) as tx:
            tx.put_scores({name: rng.random(n, dtype=np.float32)}, config={"bench": name}, command="bench-store",
                          overwrite=overwrite)

    first = _timed(lambda: commit(SCORE, False), 1)[0]
    commits = _timed(lambda: commit(COLUMN, True), repeats)
    config = SelectConfig(store=str(store), by=SCORE, top_fraction=0.5, name=SELECTION, overwrite=True)
    selects = _timed(lambda: select(config), repeats)
    infos = _timed(lambda: info(InfoConfig(store=str(store))), repeats)
    select_cli = _process_seconds(["select", str(store), "--by", SCORE, "--top-fraction", "0.5", "--name",
                                   SELECTION, "--overwrite"])
    info_cli = _process_seconds(["info", str(store)])
    return {"score_commit_first_s": first, "score_commit_s": statistics.median(commits), "score_commit_all_s": commits,
            "select_s": statistics.median(selects), "select_all_s": selects, "select_cli_s": select_cli,
            "info_s": statistics.median(infos), "info_all_s": infos, "info_cli_s": info_cli}


def bench_reads(store: Path, count: int) -> dict[str, float]:
    from salcurate.data.store import MaskStore

    with MaskStore(store) as st:
        idx = np.random.default_rng(3).integers(0, len(st), count)
        times = []
        for i in idx.tolist():
            t = time.perf_counter()
            st.image_bytes(i)
            st.map("proxy", i)
            times.append(time.perf_counter() - t)
    return {"read_median_ms": statistics.median(times) * 1e3, "read_p95_ms": float(np.percentile(times, 95) * 1e3),
            "reads": count}


def store_size(store: Path) -> dict[str, Any]:
    from salcurate.data.store import store_files

    files = store_files(store)
    return {"store_bytes": sum(p.stat().st_size for p in files), "root_bytes": files[0].stat().st_size,
            "parts": len(files) - 1}


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def _verdicts(results: dict[str, Any]) -> dict[str, bool]:
    return {k: results[k] <= goal for k, goal in GOALS.items()}


def _table(r: dict[str, Any]) -> str:
    imp, rss = r["import"], r["import"].get("rss_mb_at", {})
    ok = {k: "met" if v else "MISSED" for k, v in r["goals_met"].items()}
    rows = [
        ("import", f"{imp['seconds']:.1f} s, {imp['samples_per_s']:.0f} samples/s", ""),
        ("import RSS 10/50/100 % (peak)", "{} MiB ({:.0f} MiB)".format(
            " / ".join(f"{v:.0f}" for v in rss.values()) or "-", imp["peak_rss_mb"]), ""),
        ("score-column commit (median)", f"{r['score_commit_s']:.3f} s", ok["score_commit_s"]),
        ("select, library (median)", f"{r['select_s']:.3f} s", ok["select_s"]),
        ("select, process", f"{r['select_cli_s']:.2f} s", ""),
        ("info, library (median)", f"{r['info_s']:.3f} s", ok["info_s"]),
        ("info, process", f"{r['info_cli_s']:.2f} s", ""),
        ("random read median (p95)", f"{r['read_median_ms']:.2f} ms ({r['read_p95_ms']:.2f} ms)",
         ok["read_median_ms"]),
        ("store / source size", f"{r['size_ratio']:.3f} ({r['store_bytes'] / 2**30:.2f} GiB)", ok["size_ratio"]),
    ]
    return "\n".join(f"{a:<32} {b:<32} {c}" for a, b, c in rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True, help="samples in the store (COCO 2017 train: 118287)")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/store"))
    ap.add_argument("--keep", action="store_true", help="keep the store and the sample tree")
    ap.add_argument("--pool", type=int, default=64, help="distinct generated samples the N samples link to")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each write and of info")
    ap.add_argument("--reads", type=int, default=500, help="random single-sample reads")
    args = ap.parse_args(argv)
    for name in ("n", "pool", "repeats", "reads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")

    work = args.workdir
    t = time.perf_counter()
    pool = make_pool(work / "pool", args.pool)
    tree, store = work / f"coco-{args.n}", work / f"masks-{args.n}.h5"
    _, source_bytes = make_tree(tree, work / "pool", pool, args.n)
    print(f"source ready in {time.perf_counter() - t:.1f} s ({source_bytes / 2**30:.2f} GiB counted at full size)",
          file=sys.stderr)

    results: dict[str, Any] = {
        "n": args.n, "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}", "pool": args.pool,
        "image_kib_mean": float(np.mean([p["image_bytes"] for p in pool]) / 1024),
        "proxy_kib_mean": float(np.mean([p["proxy_bytes"] for p in pool]) / 1024),
        "source_bytes": source_bytes, "goals": GOALS}
    try:
        imp = run_import(tree, store)
        imp["samples_per_s"] = imp["n"] / imp["seconds"]
        results["import"] = imp
        print(f"import: {imp['n']} samples in {imp['seconds']:.1f} s", file=sys.stderr)
        results.update(store_size(store))
        results["size_ratio"] = results["store_bytes"] / source_bytes
        results.update(bench_reads(store, args.reads))  # before the writes: the store as imported
        results.update(bench_writes(store, args.repeats))
        results["parent_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["goals_met"] = _verdicts(results)
    finally:
        if not args.keep:
            from salcurate.data.store import remove_store

            if store.exists():
                remove_store(store)
            store.with_name(f".{store.name}.lock").unlink(missing_ok=True)  # the writers' lock file
            shutil.rmtree(tree, ignore_errors=True)
    out = work / f"store-{args.n}.json"
    out.write_text(json.dumps(results, indent=2))
    print(_table(results))
    print(f"results: {out}")
    return results


if __name__ == "__main__":
    main()
