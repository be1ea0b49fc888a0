"""The demo pipeline: the commands ``salcurate demo`` runs on the embedded demo data.

Each step is an argument list a user could type after ``salcurate``; the CLI prints and runs
them in order.  The list grows as pipeline stages land.
"""

from __future__ import annotations

from pathlib import Path

from salcurate.data.demo_data import DemoConfig

#: A short scorer training that fits the demo (the paper's full recipe is for a GPU).
#: A short SAL-Net retraining from random weights (no ImageNet weights ship with salcurate); the
#: paper's protocol (``salcurate retrain --backbone vgg16``) is for a GPU.
SHORT_RETRAIN = ["--backbone", "resnet18", "--backbone-weights", "none", "--crop", "96", "--max-iter", "30",
                 "--lr", "1e-2", "--log-every", "10"]
SHORT_TRAINING = ["--epochs", "3", "--lr", "1e-3", "--batch-size", "16", "--input-size", "64",
                  "--width", "16", "--channels", "24", "--hidden", "16"]


def demo_commands(folder: Path, config: DemoConfig, *, shipped_scorer: Path | None = None) -> list[list[str]]:
    """The pipeline on the demo dataset under ``folder`` (made by ``make_demo_dataset``).

    ``shipped_scorer``: the scorer trained on the demo data that ships in ``models/``; when it
    exists, ``score-fine`` uses it, else the scorer the demo's short training made.
    """
    voc = folder / "voc"
    store = folder / "masks.h5"
    short = folder / "scorer.pt"
    scorer = shipped_scorer if shipped_scorer is not None and shipped_scorer.exists() else short
    return [
        ["import", "voc", str(voc), "-o", str(store), "--split", "train", "--split", "val",
         "--pseudo", str(voc / "Proxy"), "--saliency", str(voc / "Saliency"),
         "--tags", str(voc / "tags.csv"), "--class-names", str(voc / "class_names.txt"), "--overwrite"],
        ["info", str(store)],
        ["score-coarse", str(store)],
        ["evaluate-scores", str(store), "--score", "sc", "--plot", str(folder / "sc-vs-quality.png")],
        ["train-scorer", str(store), "-o", str(short), *SHORT_TRAINING],
        ["score-fine", str(store), "--scorer", str(scorer), "--overwrite"],
        ["evaluate-scores", str(store), "--score", "sf", "--plot", str(folder / "sf-vs-quality.png")],
        ["select", str(store), "--by", "sf", "--tau", "0.55", "--sweep", "--overwrite"],
        ["export", str(store), str(folder / "export"), "--selection", "sf_tau0.55",
         "--scores", str(folder / "scores.csv"), "--overwrite"],
        ["report", str(store), "-o", str(folder / "report"), "--overwrite"],
        ["retrain", str(store), "--selection", "sf_tau0.55", "-o", str(folder / "runs" / "sf_tau0.55"), *SHORT_RETRAIN],
        ["evaluate", str(store), "--model", str(folder / "runs" / "sf_tau0.55"), "--split", "val",
         "--markdown", str(folder / "miou.md")],
    ]
