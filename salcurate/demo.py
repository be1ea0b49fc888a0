"""The demo pipeline: the commands ``salcurate demo`` runs on the embedded demo data.

Each step is an argument list a user could type after ``salcurate``; the CLI prints and runs
them in order.  The list grows as pipeline stages land.
"""

from __future__ import annotations

from pathlib import Path

from salcurate.demo_data import DemoConfig


def demo_commands(folder: Path, config: DemoConfig) -> list[list[str]]:
    """The pipeline on the demo dataset under ``folder`` (made by ``make_demo_dataset``)."""
    voc = folder / "voc"
    store = folder / "masks.h5"
    return [
        ["import", "voc", str(voc), "-o", str(store), "--split", "train", "--split", "val",
         "--pseudo", str(voc / "Proxy"), "--saliency", str(voc / "Saliency"),
         "--tags", str(voc / "tags.csv"), "--class-names", str(voc / "class_names.txt"), "--overwrite"],
        ["info", str(store)],
        ["score-coarse", str(store)],
        ["select", str(store), "--by", "sc", "--tau", "0.55", "--sweep", "--overwrite"],
        ["evaluate-scores", str(store), "--score", "sc", "--plot", str(folder / "sc-vs-quality.png")],
        ["export", str(store), str(folder / "export"), "--split", "train",
         "--scores", str(folder / "scores.csv"), "--overwrite"],
    ]
