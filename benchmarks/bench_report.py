"""Benchmark of ``salcurate report`` (issue: review report).

Scores the 10,582-sample store of ``bench_store_voc.py`` (coarse and fine, with the demo scorer in
``models/``) once, then times ``report`` with K = 50 and measures its peak memory, for the whole
store and for a 3,000-sample store (memory should be flat in the number of samples), and the
report's size.

Usage::

    .venv/bin/python benchmarks/bench_report.py --workdir bench-out/store
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def prepare(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    tmp = dst.with_suffix(".tmp.h5")
    from salcurate.data.store import copy_store, remove_store

    copy_store(src, tmp)
    from salcurate.scoring import coarse, fine

    coarse.run(coarse.CoarseConfig(store=str(tmp)))
    fine.run(fine.ScoreFineConfig(store=str(tmp), batch_size=64, workers=2))
    copy_store(tmp, dst)
    remove_store(tmp)


def run_report(store: Path, out: Path, k: int) -> dict[str, float]:
    code = f"""
import json, resource, time
from salcurate.report.build import ReportConfig, run
t = time.perf_counter()
s = run(ReportConfig(store={str(store)!r}, output={str(out)!r}, k={k}, overwrite=True))
print(json.dumps({{"seconds": time.perf_counter() - t, "thumbnails": s.thumbnails, "size_mb": s.size_bytes / 2**20,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/store"))
    ap.add_argument("--k", type=int, default=50)
    args = ap.parse_args()
    out = args.workdir / "report"
    out.mkdir(exist_ok=True)
    full = out / "scored.h5"
    prepare(args.workdir / "masks.h5", full)
    small_src = args.workdir / "coarse" / "small.h5"  # made by bench_coarse.py
    small = out / "scored-small.h5"
    if small_src.exists():
        prepare(small_src, small)
    results = {"full": run_report(full, out / "full", args.k)}
    if small.exists():
        results["small"] = run_report(small, out / "small", args.k)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
