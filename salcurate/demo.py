"""The demo pipeline: the commands ``salcurate demo`` runs on the embedded demo data.

:func:`run` prepares a demo: it makes the demo data set (``salcurate.data.demo_data``) under the
demo folder and gives the pipeline's steps, each an argument list a user could type after
``salcurate``; the CLI prints and runs them in order.  The list grows as pipeline stages land.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from salcurate.config import setting
from salcurate.data.demo_data import DemoConfig, make_demo_dataset
from salcurate.events import NO_EVENTS, Events, Result

#: A short scorer training that fits the demo (the paper's full recipe is for a GPU).
#: A short SAL-Net retraining from random weights (no ImageNet weights ship with salcurate); the
#: paper's protocol (``salcurate retrain --backbone vgg16``) is for a GPU.
SHORT_RETRAIN = ["--backbone", "resnet18", "--backbone-weights", "none", "--crop", "96", "--max-iter", "30",
                 "--lr", "1e-2", "--log-every", "10"]
SHORT_TRAINING = ["--epochs", "3", "--lr", "1e-3", "--batch-size", "16", "--input-size", "64",
                  "--width", "16", "--channels", "24", "--hidden", "16"]


@dataclasses.dataclass(frozen=True)
class DemoRunConfig:
    """Settings of ``salcurate demo``: where it works and the demo data set it makes there."""

    folder: str = setting("salcurate-demo", "Where the demo dataset and its store go.", argument=True,
                          metavar="FOLDER")
    data: DemoConfig = setting(default_factory=DemoConfig)


@dataclasses.dataclass(frozen=True)
class DemoResult(Result):
    """A prepared demo: its data set and the pipeline's steps (argument lists after ``salcurate``)."""

    folder: Path
    dataset: Path
    num_images: int
    splits: dict[str, int]
    steps: tuple[tuple[str, ...], ...]
    store: Path
    report: Path


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


def run(config: DemoRunConfig, *, events: Events | None = None) -> DemoResult:
    """Make the demo data set in ``config.folder``/voc and give the pipeline's steps.

    The folder's earlier demo retraining runs are removed, so that the steps start afresh.
    ``events`` hears of each image of the data set as it is made.
    """
    from salcurate.scoring.fine import default_scorer_path

    events = events or NO_EVENTS
    folder = Path(config.folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = make_demo_dataset(folder / "voc", config.data, events=events)
    shutil.rmtree(folder / "runs", ignore_errors=True)  # the demo's own earlier retraining runs
    steps = demo_commands(folder, config.data, shipped_scorer=default_scorer_path())
    return DemoResult(folder=folder, dataset=data.root, num_images=data.num_images, splits=data.splits,
                      steps=tuple(tuple(s) for s in steps), store=folder / "masks.h5",
                      report=folder / "report" / "index.html")
