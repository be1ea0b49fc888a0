"""Shared fixtures: a tiny hand-made VOC-layout dataset, a store imported from it, CLI helpers.

Everything here is written byte by byte with numpy + PIL (not with ``salcurate.data.demo_data``),
so a test knows exactly which pixels went in and can compare them with what comes out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from salcurate.cli import app
from salcurate.events import Events
from salcurate.imageio import write_grey_png, write_label_png

#: Background plus three classes with non-VOC names (nothing may assume the 21 VOC classes).
CLASS_NAMES: tuple[str, ...] = ("background", "widget", "gadget", "gizmo")
NUM_CLASSES = len(CLASS_NAMES) - 1

#: (id, height, width, split); every image has its own size.
SAMPLES: tuple[tuple[str, int, int, str], ...] = (
    ("s001", 24, 32, "train"),
    ("s002", 30, 20, "train"),
    ("s003", 16, 16, "train"),
    ("s004", 20, 28, "train"),
    ("s005", 32, 24, "val"),
    ("s006", 18, 22, "val"),
)
#: This id has no ground truth file and no line in tags.csv (gt and tags are optional).
NO_GT_ID = "s006"


@dataclasses.dataclass
class TinyVoc:
    """What ``tiny_voc`` wrote: folders, ids and the exact arrays behind every file."""

    root: Path
    ids: list[str]
    splits: dict[str, list[str]]  # split -> ids, in list-file order
    split_of: dict[str, str]  # id -> split
    class_names: tuple[str, ...]
    image_dir: Path
    gt_dir: Path
    proxy_dir: Path
    saliency_dir: Path
    split_dir: Path
    tags_csv: Path
    class_names_file: Path
    images: dict[str, Path]  # id -> JPEG path
    proxy: dict[str, np.ndarray]  # id -> (H, W) uint8
    gt: dict[str, np.ndarray]  # id -> (H, W) uint8 (NO_GT_ID missing)
    saliency: dict[str, np.ndarray]  # id -> (H, W) uint8
    tags: dict[str, tuple[int, ...]]  # id -> class indices 1..C (NO_GT_ID missing)
    sizes: dict[str, tuple[int, int]]  # id -> (H, W)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) - 1

    def split_file(self, split: str) -> Path:
        return self.split_dir / f"{split}.txt"


def _label_map(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky labels (background and 1-3 classes) with a few ignore (255) pixels: ``(H, W)`` uint8."""
    present = rng.choice(np.arange(1, NUM_CLASSES + 1), size=rng.integers(1, NUM_CLASSES + 1), replace=False)
    values = np.concatenate([[0], present]).astype(np.uint8)
    coarse = rng.choice(values, size=(h // 4 + 1, w // 4 + 1))
    labels = np.kron(coarse, np.ones((4, 4), dtype=np.uint8))[:h, :w].copy()
    labels[rng.random((h, w)) < 0.05] = 255
    labels[0, 0] = 255  # at least one ignore pixel everywhere
    return labels


def _jpeg_bytes(rng: np.random.Generator, h: int, w: int) -> bytes:
    # Noise makes the entropy-coded data much larger than the headers, so truncating the
    # file by half cuts into the scan (the interesting case), not into the header.
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_tiny_voc(root: Path, seed: int = 0) -> TinyVoc:
    """Write the tiny VOC-layout dataset under ``root`` and describe it."""
    rng = np.random.default_rng(seed)
    dirs = {name: root / name for name in ("JPEGImages", "SegmentationClass", "Proxy", "Saliency")}
    split_dir = root / "ImageSets" / "Segmentation"
    for d in (*dirs.values(), split_dir):
        d.mkdir(parents=True)
    v = TinyVoc(
        root=root, ids=[s[0] for s in SAMPLES], splits={}, split_of={}, class_names=CLASS_NAMES,
        image_dir=dirs["JPEGImages"], gt_dir=dirs["SegmentationClass"], proxy_dir=dirs["Proxy"],
        saliency_dir=dirs["Saliency"], split_dir=split_dir, tags_csv=root / "tags.csv",
        class_names_file=root / "class_names.txt", images={}, proxy={}, gt={}, saliency={}, tags={}, sizes={},
    )
    tag_lines = ["id,tags"]
    for sample_id, h, w, split in SAMPLES:
        v.splits.setdefault(split, []).append(sample_id)
        v.split_of[sample_id] = split
        v.sizes[sample_id] = (h, w)
        image = v.image_dir / f"{sample_id}.jpg"
        image.write_bytes(_jpeg_bytes(rng, h, w))
        v.images[sample_id] = image
        v.proxy[sample_id] = _label_map(rng, h, w)
        write_label_png(v.proxy_dir / f"{sample_id}.png", v.proxy[sample_id])
        v.saliency[sample_id] = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        write_grey_png(v.saliency_dir / f"{sample_id}.png", v.saliency[sample_id])
        if sample_id != NO_GT_ID:
            v.gt[sample_id] = _label_map(rng, h, w)
            write_label_png(v.gt_dir / f"{sample_id}.png", v.gt[sample_id])
            present = np.unique(v.gt[sample_id])
            v.tags[sample_id] = tuple(int(k) for k in present if 1 <= k <= NUM_CLASSES)
            tag_lines.append(f"{sample_id},{' '.join(str(k) for k in v.tags[sample_id])}")
    for split, ids in v.splits.items():
        v.split_file(split).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    v.tags_csv.write_text("\n".join(tag_lines) + "\n", encoding="utf-8")
    v.class_names_file.write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    return v


@pytest.fixture
def tiny_voc(tmp_path: Path) -> TinyVoc:
    """Six small images of different sizes in VOC layout, train 4 / val 2, 3 classes."""
    return write_tiny_voc(tmp_path / "voc")


def voc_args(v: TinyVoc, out: Path | str, *, splits: Sequence[str] = ("train", "val"),
             root: Path | str | None = None, pseudo: Path | str | None = None) -> list[str]:
    """The standard ``import voc`` argument list for the tiny dataset."""
    args = ["import", "voc", str(root if root is not None else v.root), "-o", str(out)]
    for split in splits:
        args += ["--split", split]
    args += ["--pseudo", str(pseudo if pseudo is not None else v.proxy_dir), "--saliency", str(v.saliency_dir),
             "--tags", str(v.tags_csv), "--class-names", str(v.class_names_file)]
    return args


def invoke(args: Sequence[str | os.PathLike[str]]) -> Result:
    """Run the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_fails_one_line(args: Sequence[str | os.PathLike[str] | object], *needles: str) -> Result:
    """The command fails with exactly one ``error:`` line (no traceback) that holds every needle."""
    result = invoke(list(args))  # type: ignore[arg-type]
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in " ".join(result.stderr.split()), result.stderr
    return result


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/NAME.py`` as a module (registered in sys.modules: its dataclasses
    look their module up there)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes (to check that a store was left unchanged)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 for every file under ``folder``."""
    return {str(p.relative_to(folder)): file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny_store(tiny_voc: TinyVoc, tmp_path: Path) -> Path:
    """The tiny dataset imported (train + val, proxy, gt, saliency, tags) via the CLI."""
    out = tmp_path / "stores" / "tiny.h5"
    out.parent.mkdir()
    assert_ok(invoke(voc_args(tiny_voc, out)))
    return out


def put_selection(path: Path, name: str, weights: Sequence[float]) -> None:
    """Write a selection (one weight per sample) straight into a store."""
    from salcurate.data import store as store_mod

    with store_mod.transaction(path, command="test", config={}) as tx:
        tx.put_selection(name, np.asarray(weights, np.float32), rule={"test": True}, command="test", overwrite=True)


def make_demo_store(root: Path, *, num_images: int, size: int, seed: int) -> Path:
    """A demo dataset with hand-made faulty proxies imported into ``root/masks.h5`` (train and val, saliency, tags)."""
    from salcurate.data.demo_data import DemoConfig, make_demo_dataset
    from salcurate.data.importing import ImportConfig
    from salcurate.data.importing import run as import_dataset

    make_demo_dataset(root / "voc", DemoConfig(num_images=num_images, size=size, seed=seed, proxies="faults"))
    out = root / "masks.h5"
    import_dataset(ImportConfig(layout="voc", root=str(root / "voc"), output=str(out), splits=("train", "val"),
                                pseudo_dir=str(root / "voc/Proxy"), saliency_dir=str(root / "voc/Saliency"),
                                tags_file=str(root / "voc/tags.csv"),
                                class_names_file=str(root / "voc/class_names.txt"), workers=1))
    return out


@pytest.fixture(scope="session")
def demo_scored_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-image demo store (96 px) with coarse scores: for the fine-scoring tests."""
    from salcurate.scoring.coarse import CoarseConfig, run

    out = make_demo_store(tmp_path_factory.mktemp("demo-scored"), num_images=48, size=96, seed=5)
    run(CoarseConfig(store=str(out), workers=1))
    return out


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP's waiting threads
    make small ops up to 40x slower; run a test on one thread and restore the setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RecordingEvents(Events):
    """Events that remember every call (``calls``: ``("start", (total, done))``, ``("advance", n)``,
    ``("note", message)``), for tests of progress reporting."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.calls.append(("start", (total, done)))

    def advance(self, n: int = 1, **info: object) -> None:
        self.calls.append(("advance", n))

    def note(self, message: str) -> None:
        self.calls.append(("note", message))

    def metrics(self, record: dict[str, object]) -> None:
        self.calls.append(("metrics", record))

    def advanced(self) -> int:
        return sum(int(n) for kind, n in self.calls if kind == "advance")  # type: ignore[call-overload]
