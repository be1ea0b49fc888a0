"""How well SC predicts true mask quality on the demo data, and what limits it.

Makes the default demo dataset (300 images, seed 0), scores it with several coarse-scoring
configurations, and reports for each the Spearman/Pearson correlation of SC with true quality
(AGT), the AUROC for finding masks with AGT < 0.5, and the mean AGT of the masks kept at
tau = 0.55.  Then, for the default configuration, it breaks the worst misjudgements down by
the demo's recorded proxy and saliency faults.

Usage::

    .venv/bin/python benchmarks/quality_coarse.py --workdir bench-out/quality
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from salcurate.data.demo_data import DemoConfig, make_demo_dataset
from salcurate.data.importing import ImportConfig
from salcurate.data.importing import run as import_dataset
from salcurate.data.store import MaskStore, copy_store
from salcurate.scoring import coarse
from salcurate.scoring.coarse import CoarseConfig
from salcurate.selection.validation import true_quality_of_store
from salcurate.stats import auroc, pearson, spearman

VARIANTS: dict[str, CoarseConfig] = {
    "default (store saliency, Otsu, no CRF, b 0.1)": CoarseConfig(),
    "adaptive threshold (2 x mean)": CoarseConfig(threshold="adaptive"),
    "+ CRF": CoarseConfig(crf=True),
    "b = 0 (no objectness)": CoarseConfig(b=0.0),
    "b = 0.3": CoarseConfig(b=0.3),
    "paper's literal AC formula": CoarseConfig(ac_formula="paper"),
    "built-in saliency (RBD, erasing)": CoarseConfig(saliency="builtin"),
    "built-in saliency + CRF": CoarseConfig(saliency="builtin", crf=True),
    "built-in saliency, adaptive threshold": CoarseConfig(saliency="builtin", threshold="adaptive"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/quality"))
    ap.add_argument("--images", type=int, default=300)
    args = ap.parse_args()
    voc = args.workdir / "voc"
    make_demo_dataset(voc, DemoConfig(num_images=args.images, proxies="faults"))
    base = args.workdir / "base.h5"
    import_dataset(ImportConfig(layout="voc", root=str(voc), output=str(base), splits=("train", "val"),
                                pseudo_dir=str(voc / "Proxy"), saliency_dir=str(voc / "Saliency"),
                                tags_file=str(voc / "tags.csv"), class_names_file=str(voc / "class_names.txt"),
                                overwrite=True))
    with MaskStore(base) as st:
        agt, miou = true_quality_of_store(st)
        ids = st.ids
    rows = []
    default_sc = None
    for name, cfg in VARIANTS.items():
        work = args.workdir / "work.h5"
        copy_store(base, work)
        summary = coarse.run(dataclasses.replace(cfg, store=str(work)))
        with MaskStore(work) as st:
            sc = st.score("sc").astype(np.float64)
            cd = st.score("cd").astype(np.float64)
            ac = st.score("ac").astype(np.float64)
        if default_sc is None:
            default_sc, default_ac, default_cd = sc, ac, cd
        kept = sc >= 0.55
        rows.append({"variant": name, "spearman_agt": spearman(sc, agt), "pearson_agt": pearson(sc, agt),
                     "spearman_miou": spearman(sc, miou), "auroc_bad": auroc(-sc, agt < 0.5),
                     "kept_0.55": int(kept.sum()), "mean_agt_kept": float(agt[kept].mean()),
                     "mean_agt_all": float(agt.mean()), "seconds": summary.seconds})
        print(json.dumps(rows[-1]))
    # where the default SC goes wrong, by recorded fault
    faults = {r["id"]: r for r in csv.DictReader((voc / "quality.csv").open())}
    sal_faults = {r["id"]: r["fault"] for r in csv.DictReader((voc / "saliency_quality.csv").open())}
    assert default_sc is not None
    by_sal: dict[str, list[float]] = {}
    by_proxy: dict[str, list[float]] = {}
    for i, sid in enumerate(ids):
        err = float(default_sc[i] - agt[i])
        by_sal.setdefault(sal_faults.get(sid, "none"), []).append(err)
        by_proxy.setdefault(faults[sid]["fault"], []).append(err)
    breakdown = {
        "saliency_fault": {k: {"n": len(v), "mean_sc_minus_agt": float(np.mean(v))} for k, v in sorted(by_sal.items())},
        "proxy_fault": {k: {"n": len(v), "mean_sc_minus_agt": float(np.mean(v))} for k, v in sorted(by_proxy.items())},
        "spearman_ac_agt": spearman(default_ac, agt), "spearman_cd_agt": spearman(default_cd, agt),
        "spearman_cd_miou": spearman(default_cd, miou),
    }
    print(json.dumps({"variants": rows, "breakdown": breakdown}, indent=2))


if __name__ == "__main__":
    main()
