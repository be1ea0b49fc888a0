"""The demo pipeline: the commands ``salcurate demo`` runs on the embedded demo data.

:func:`run` prepares a demo: it makes the demo data set (``salcurate.data.demo_data``: objects
of look-alike classes pasted on photos, ground truth, saliency maps and image tags, but no proxy
masks) under the demo folder and gives the pipeline's steps, each an argument list a user could
type after ``salcurate``; the CLI prints and runs them in order.  The demo goes from tags alone
to a retrained SAL-Net: import, CAM proxies from the tags (``pseudo-label``), coarse and fine
scores, selection, export, the review report, a short SAL-Net retraining that starts from the
CAM classifier's backbone, and its evaluation.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from salcurate.config import setting
from salcurate.data.demo_data import DemoConfig, make_demo_dataset
from salcurate.data.store import proxy_column
from salcurate.events import NO_EVENTS, Events, Result

#: The proxy set the demo makes from the tags.
PROXY_SET = "cam"
#: Where ``pseudo-label`` keeps its classifier, relative to the demo folder; ``retrain`` starts
#: from the classifier's backbone file in it.
PSEUDO_LABEL_RUN = Path("runs") / "pseudo-label"
BACKBONE_FILE = "backbone.pth"

#: A CAM classifier for the 300 default demo images that takes under two minutes on an idle 2-core
#: CPU (16 epochs of 270 images at 48 px, then 300 CAM proxies at 64 px: about 80 s; mIoU 32.3
#: against the ground truth on 2026-12-01, against 22.9 with 8 epochs at 64 px and a 1x head):
#: a ResNet-18 from random weights (no ImageNet weights ship with salcurate), small inputs, the
#: head at 10x the backbone's learning rate, CAMs at one scale.  On a GPU, ``salcurate
#: pseudo-label`` with its defaults (IRN's recipe, an ImageNet ResNet-50) is the real thing.
PSEUDO_LABEL_INPUT = 48
PSEUDO_LABEL_EPOCHS = 16
PSEUDO_LABEL_BATCH = 16
PSEUDO_LABEL_LR = "0.02"
PSEUDO_LABEL_HEAD_LR_MULT = "10"
PSEUDO_LABEL_SCALES = "1.0"
PSEUDO_LABEL_CAM_SIDE = 64
PSEUDO_LABEL_BG_THRESHOLD = "0.45"
SHORT_PSEUDO_LABEL = ["--backbone", "resnet18", "--backbone-weights", "none",
                      "--input-size", str(PSEUDO_LABEL_INPUT), "--epochs", str(PSEUDO_LABEL_EPOCHS),
                      "--batch-size", str(PSEUDO_LABEL_BATCH), "--lr", PSEUDO_LABEL_LR,
                      "--head-lr-mult", PSEUDO_LABEL_HEAD_LR_MULT, "--scales", PSEUDO_LABEL_SCALES,
                      "--cam-max-side", str(PSEUDO_LABEL_CAM_SIDE), "--bg-threshold", PSEUDO_LABEL_BG_THRESHOLD,
                      "--refine", "pamr"]

#: A short scorer training that fits the demo (the paper's full recipe is for a GPU).
#: A smoke run of train-scorer (score-fine then uses the shipped scorer).  CAM proxies from a
#: classifier trained from random weights rarely reach AC >= 0.8 (14 of the demo's 300 on
#: 2026-12-01, none in a 48-image demo), so this short run takes every scored mask as a positive
#: and makes no composites (they need AC >= 0.9 sources).
SHORT_TRAINING = ["--epochs", "3", "--lr", "1e-3", "--batch-size", "16", "--input-size", "64",
                  "--width", "16", "--channels", "24", "--hidden", "16", "--positive-min", "0",
                  "--proportions", "4000,1000,3000,0"]
#: A short SAL-Net retraining from the CAM classifier's backbone (no ImageNet weights ship with
#: salcurate; its batch norm stays fixed, and at lr 1e-2 the loss diverges); the paper's protocol
#: (``salcurate retrain --backbone vgg16``) is for a GPU.
SHORT_RETRAIN = ["--backbone", "resnet18", "--crop", "96", "--max-iter", "30", "--lr", "1e-3", "--log-every", "10"]


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
    exists, ``score-fine`` uses it, else the scorer the demo's short training made.  Every step
    after ``pseudo-label`` finds the proxy set by itself: the store holds only that one.
    """
    folder = Path(folder)
    voc = folder / "voc"
    store = folder / "masks.h5"
    short = folder / "scorer.pt"
    scorer = shipped_scorer if shipped_scorer is not None and shipped_scorer.exists() else short
    cam_run = folder / PSEUDO_LABEL_RUN
    # the best half by the default score q (score-combined): CAM proxies of a classifier trained
    # from random weights on a few images may all score below the paper's tau 0.55 (the sweep
    # shows what each tau keeps)
    selection = f"{proxy_column('q', PROXY_SET)}_best_half"
    keep = str(max(8, config.num_images // 2))
    salnet = folder / "runs" / "salnet"
    return [
        ["import", "voc", str(voc), "-o", str(store), "--split", "train", "--split", "val",
         "--saliency", str(voc / "Saliency"), "--tags", str(voc / "tags.csv"),
         "--class-names", str(voc / "class_names.txt"), "--overwrite"],
        ["info", str(store)],
        ["pseudo-label", str(store), "--proxy", PROXY_SET, "-o", str(cam_run), *SHORT_PSEUDO_LABEL],
        ["score-coarse", str(store)],
        ["evaluate-scores", str(store), "--score", "sc", "--plot", str(folder / "sc-vs-quality.png")],
        ["train-scorer", str(store), "-o", str(short), *SHORT_TRAINING],
        ["score-fine", str(store), "--scorer", str(scorer), "--overwrite"],
        ["evaluate-scores", str(store), "--score", "sf", "--plot", str(folder / "sf-vs-quality.png")],
        ["score-evidence", str(store)],
        ["score-combined", str(store)],
        ["evaluate-scores", str(store), "--score", "q", "--plot", str(folder / "q-vs-quality.png")],
        ["select", str(store), "--tau", "0.55", "--sweep", "--overwrite"],
        ["select", str(store), "--top-k", keep, "--name", selection, "--overwrite"],
        ["export", str(store), str(folder / "export"), "--selection", selection,
         "--scores", str(folder / "scores.csv"), "--overwrite"],
        ["report", str(store), "-o", str(folder / "report"), "--overwrite"],
        ["retrain", str(store), "--selection", selection, "-o", str(salnet), *SHORT_RETRAIN,
         "--backbone-weights", str(cam_run / BACKBONE_FILE)],
        ["evaluate", str(store), "--model", str(salnet), "--split", "val",
         "--markdown", str(folder / "miou.md")],
    ]


def run(config: DemoRunConfig, *, events: Events | None = None) -> DemoResult:
    """Make the demo data set in ``config.folder``/voc and give the pipeline's steps.

    The folder's earlier runs (the CAM classifier, the retraining) are removed, so that the
    steps start afresh.  ``events`` hears of each image of the data set as it is made.
    """
    from salcurate.scoring.fine import default_scorer_path

    events = events or NO_EVENTS
    folder = Path(config.folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = make_demo_dataset(folder / "voc", config.data, events=events)
    shutil.rmtree(folder / "runs", ignore_errors=True)  # the demo's own earlier training runs
    steps = demo_commands(folder, config.data, shipped_scorer=default_scorer_path())
    return DemoResult(folder=folder, dataset=data.root, num_images=data.num_images, splits=data.splits,
                      steps=tuple(tuple(s) for s in steps), store=folder / "masks.h5",
                      report=folder / "report" / "index.html")
