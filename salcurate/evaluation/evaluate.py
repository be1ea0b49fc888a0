"""``evaluate`` and ``predict``: a SAL-Net model's segmentations, scored against ground truth or written out.

``evaluate`` runs the model over the samples of a store's split that have ground truth and
fills one confusion matrix per inference setting in one pass (NOTES.md "SAL-Net": the paper
reports single-scale, multi-scale and +CRF results separately):

* ``single-scale``: the image at scale 1.0;
* ``multi-scale`` (default on): scales 0.5, 0.75, 1.0 fused by max, ``+ flip`` with mirrored
  images (``single-scale + flip`` when only flip is asked for);
* ``+ CRF`` (off by default): the dense CRF on the last of these.

Passes shared by settings (scale 1.0) run once; each setting's seconds per image are the time
of its own passes, fusion (and CRF), as if it ran alone, after one untimed warm-up on the first
image; decoding is not counted.  mIoU is over C + 1
classes from the confusion matrix summed over the split, 255 ignored (:mod:`.metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.errors import InputError, StoreError
from salcurate.evaluation.inference import CRF_MISSING, InferenceConfig, crf_available, crf_segmentation
from salcurate.segmentation_metrics import (
    confusion_matrix,
    iou_from_confusion,
    mean_accuracy,
    mean_iou,
    paper_labels,
    paper_order,
    pixel_accuracy,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------------------
# Settings and the model
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
    """One way of predicting: the scales fused, whether mirrored images join, whether a CRF follows."""

    name: str
    scales: tuple[float, ...]
    flip: bool
    crf: bool

    @property
    def passes(self) -> list[tuple[float, bool]]:
        """The forward passes it fuses: ``(scale, mirrored)``."""
        return [(s, m) for s in self.scales for m in ((False, True) if self.flip else (False,))]


def settings_for(*, multiscale: bool, flip: bool, crf: bool, scales: Sequence[float]) -> list[Setting]:
    """The settings one evaluation reports: single-scale always, then multi-scale (and/or flip)
    when asked for, then ``+ CRF`` on the last one when ``crf``."""
    if isinstance(scales, str) or not scales:
        raise InputError(f"expected a non-empty list of scales, got {scales!r}; e.g. 0.5,0.75,1.0")
    out = [Setting("single-scale", (1.0,), False, False)]
    second = tuple(float(s) for s in scales) if multiscale else (1.0,)
    if flip or second != (1.0,):
        name = ("multi-scale" if multiscale else "single-scale") + (" + flip" if flip else "")
        out.append(Setting(name, second, bool(flip), False))
    if crf:
        last = out[-1]
        out.append(Setting(last.name + " + CRF", last.scales, last.flip, True))
    return out


def load_segmentation_model(path: str | Path, *, device: Any) -> tuple[Any, dict[str, Any], Callable[[np.ndarray], Any]]:
    """A SAL-Net model file → ``(model in eval mode on device, info, preprocess)``.

    ``path`` may be a ``retrain`` run folder (its ``model.pt`` is loaded).  ``info`` has at
    least ``class_names`` (background first) and ``config``; ``preprocess`` turns an ``(H, W,
    3)`` uint8 image into the model's ``(3, H, W)`` input.  Raises InputError for a missing file
    or one that is not a SAL-Net model.
    """
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if not path.is_file():
        what = "is a folder without model.pt" if path.is_dir() else "not found"
        raise InputError(f"model {path} {what}; pass a model file (or run folder) written by `salcurate retrain`")
    try:
        from salcurate.nn.salnet import load_model, preprocess
    except ImportError as exc:  # pragma: no cover - only in a broken install
        raise InputError(f"SAL-Net support is missing from this install ({exc}); reinstall salcurate") from None
    model, info = load_model(path, map_location=device)
    return model, info, preprocess


def _check_class_names(model_path: str, model_names: Sequence[str], store_path: Path, store_names: Sequence[str]) -> None:
    if tuple(model_names) == tuple(store_names):
        return
    if len(model_names) != len(store_names):
        detail = f"{len(model_names)} classes in the model, {len(store_names)} in the store"
    else:
        k = next(i for i, (a, b) in enumerate(zip(model_names, store_names)) if a != b)
        detail = f"class {k} is {model_names[k]!r} in the model and {store_names[k]!r} in the store"
    raise InputError(f"the class names of model {model_path} differ from those of store {store_path} ({detail}); "
                     "evaluate a model trained on this store's class list")


def _passes_probabilities(model: Any, x: Any, passes: Sequence[tuple[float, bool]], device: Any
                          ) -> tuple[dict[tuple[float, bool], Any], dict[tuple[float, bool], float]]:
    """Run each ``(scale, mirrored)`` pass once: probabilities ``(C+1, H, W)`` tensors and seconds."""
    import torch

    from salcurate.evaluation.inference import _scale_probabilities

    probs, seconds = {}, {}
    for scale, mirrored in passes:
        t0 = time.perf_counter()
        if mirrored:
            p = _scale_probabilities(model, x.flip(-1), scale)[0].flip(-1)
        else:
            p = _scale_probabilities(model, x, scale)[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        probs[(scale, mirrored)], seconds[(scale, mirrored)] = p, time.perf_counter() - t0
    return probs, seconds


def _fused(probs: dict[tuple[float, bool], Any], passes: Sequence[tuple[float, bool]]) -> np.ndarray:
    """Max fusion of the passes' probabilities, renormalised: ``(C+1, H, W)`` float32 numpy."""
    import torch

    fused = probs[passes[0]]
    for key in passes[1:]:
        fused = torch.maximum(fused, probs[key])
    if len(passes) > 1:
        fused = fused / fused.sum(dim=0, keepdim=True)
    return fused.cpu().numpy().astype(np.float32, copy=False)


def _predict_settings(model: Any, prep: Callable[[np.ndarray], Any], image: np.ndarray, settings: Sequence[Setting],
                      inference: InferenceConfig, device: Any, class_names: Sequence[str]) -> list[tuple[np.ndarray, float]]:
    """``(labels (H, W) uint8, seconds)`` per setting for one image, sharing passes and CRF inputs."""
    import torch

    needed = list(dict.fromkeys(p for s in settings for p in s.passes))
    with torch.inference_mode():
        x = prep(image).to(device)
        probs, seconds = _passes_probabilities(model, x, needed, device)
        channels = int(probs[needed[0]].shape[0])
        if channels != len(class_names):
            raise InputError(f"the model predicts {channels} classes but its class list has {len(class_names)} "
                             f"({', '.join(class_names[:3])}, ...); the model file is damaged, retrain it")
        out = []
        fused_cache: dict[tuple[tuple[float, bool], ...], tuple[np.ndarray, float]] = {}
        for s in settings:
            key = tuple(s.passes)
            if key not in fused_cache:
                t0 = time.perf_counter()
                fused_cache[key] = (_fused(probs, s.passes), time.perf_counter() - t0)
            fused, fuse_seconds = fused_cache[key]
            t0 = time.perf_counter()
            if s.crf:
                labels = crf_segmentation(image, fused, **inference.crf_params())
            else:
                labels = fused.argmax(axis=0).astype(np.uint8)
            out.append((labels, sum(seconds[p] for p in s.passes) + fuse_seconds + time.perf_counter() - t0))
    return out


def _warm_up(model: Any, prep: Callable[[np.ndarray], Any], image: np.ndarray, settings: Sequence[Setting],
             device: Any) -> None:
    """Run the forward passes once, untimed, so that one-time set-up costs (kernel selection,
    memory pools) do not count in the first image's seconds."""
    import torch

    with torch.inference_mode():
        _passes_probabilities(model, prep(image).to(device), list(dict.fromkeys(p for s in settings for p in s.passes)),
                              device)


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``evaluate``; the resolved values are saved with the results (``to_json``)."""

    store: str
    model: str
    split: str = "val"
    multiscale: bool = True
    crf: bool = False
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    device: str = "auto"
    save_masks: str | None = None  # folder for the last setting's masks (VOC palette PNGs); None = none
    limit: int | None = None  # evaluate only the first N samples with ground truth

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inference"] = self.inference.to_dict()
        d["settings"] = [s.name for s in settings_for(multiscale=self.multiscale, flip=self.inference.flip,
                                                       crf=self.crf, scales=self.inference.scales)]
        return d


@dataclasses.dataclass(frozen=True)
class SettingResult:
    """One setting's scores over the split.  ``iou`` is in the paper's class order
    (``EvaluationResult.labels``); ``confusion`` is ``(K, K)`` in the store's class order."""

    name: str
    scales: tuple[float, ...]
    flip: bool
    crf: bool
    confusion: np.ndarray
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    iou: tuple[float, ...]
    num_images: int
    seconds_per_image: float


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_store` found; ``config`` is the resolved :class:`EvaluateConfig`."""

    settings: tuple[SettingResult, ...]
    class_names: tuple[str, ...]  # the store's, background first
    order: tuple[int, ...]  # class indices in the paper's Table II order
    labels: tuple[str, ...]  # column labels in that order
    split: str
    num_images: int
    device: str
    seconds: float
    config: dict[str, Any]
    model_info: dict[str, Any]
    masks_dir: str | None


def _check_evaluate(config: object) -> EvaluateConfig:
    if not isinstance(config, EvaluateConfig):
        raise InputError(f"expected an EvaluateConfig, got {type(config).__name__}; build one with EvaluateConfig(store=..., model=...)")
    if config.limit is not None and (isinstance(config.limit, bool) or not isinstance(config.limit, int) or config.limit < 1):
        raise InputError(f"--limit must be a whole number >= 1, got {config.limit!r}")
    if config.save_masks is not None and Path(config.save_masks).exists() and not Path(config.save_masks).is_dir():
        raise InputError(f"--save-masks {config.save_masks} exists and is not a folder; pass a folder path")
    if config.crf and not crf_available():
        raise InputError(CRF_MISSING)
    return config


def _gt_indices(st: Any, split: str) -> np.ndarray:
    """Indices of the split's samples that have ground truth (errors say where there is some)."""
    splits = st.split_names()
    if split not in splits:
        raise StoreError(f"{st.path}: no split {split!r} in the store (it has: {', '.join(splits)}); pass --split NAME")
    if "gt" not in st.map_names():
        raise StoreError(f"{st.path}: the store holds no ground truth; import it, e.g. `salcurate import voc ROOT "
                         f"-o {st.path.name} --append --split val`")
    has_gt = st.has_map("gt")
    chosen = np.flatnonzero((st.splits == split) & has_gt)
    if not len(chosen):
        counts = {s: int(((st.splits == s) & has_gt).sum()) for s in splits}
        with_gt = ", ".join(f"{s} ({n})" for s, n in counts.items() if n) or "none"
        raise StoreError(f"{st.path}: split {split!r} has no samples with ground truth; splits with ground truth: "
                         f"{with_gt}; pass --split with one of them")
    return chosen


def evaluate_store(config: EvaluateConfig, *, on_start: Callable[[int], None] | None = None,
                   progress: Callable[[int], None] | None = None) -> EvaluationResult:
    """Evaluate a SAL-Net model on the samples of ``config.split`` that have ground truth.

    Fills one ``(K, K)`` confusion matrix per setting (:func:`settings_for`) in one pass over
    the images and returns mIoU, pixel accuracy, mean accuracy and per-class IoU (paper order)
    for each; with ``save_masks`` the last setting's label maps go there as ``<id>.png`` (VOC
    palette).  ``on_start(total)`` is called once the images are known, ``progress(1)`` after
    each.  Raises InputError / StoreError for a missing or foreign model file, class names
    that differ from the store's, a split without ground truth and an unusable device.
    """
    from salcurate.data.store import MaskStore
    from salcurate.imageio import write_label_png
    from salcurate.nn.device import resolve_device

    config = _check_evaluate(config)
    settings = settings_for(multiscale=config.multiscale, flip=config.inference.flip, crf=config.crf,
                            scales=config.inference.scales)
    device = resolve_device(config.device)
    t_start = time.perf_counter()
    with MaskStore(config.store) as st:
        chosen = _gt_indices(st, config.split)
        if config.limit is not None:
            chosen = chosen[: config.limit]
        names = st.class_names
        model, info, prep = load_segmentation_model(config.model, device=device)
        _check_class_names(config.model, info["class_names"], st.path, names)
        masks_dir = None
        if config.save_masks is not None:
            masks_dir = Path(config.save_masks)
            masks_dir.mkdir(parents=True, exist_ok=True)
        k = len(names)
        cms = [np.zeros((k, k), np.int64) for _ in settings]
        seconds = [0.0 for _ in settings]
        log.info("evaluating %s on %d images of split %r (%s) on %s", config.model, len(chosen), config.split,
                 ", ".join(s.name for s in settings), device)
        if on_start is not None:
            on_start(len(chosen))
        _warm_up(model, prep, st.image(int(chosen[0])), settings, device)
        for i in chosen:
            i = int(i)
            image, gt = st.image(i), st.map("gt", i)
            results = _predict_settings(model, prep, image, settings, config.inference, device, names)
            for j, (labels, secs) in enumerate(results):
                cms[j] += confusion_matrix(labels, gt, num_classes=k)
                seconds[j] += secs
            if masks_dir is not None:
                write_label_png(masks_dir / f"{Path(st.ids[i]).name}.png", results[-1][0])
            if progress is not None:
                progress(1)
    order = paper_order(names)
    n = len(chosen)
    out = []
    for s, cm, secs in zip(settings, cms, seconds):
        iou = iou_from_confusion(cm)
        out.append(SettingResult(name=s.name, scales=s.scales, flip=s.flip, crf=s.crf, confusion=cm, miou=mean_iou(cm),
                                 pixel_accuracy=pixel_accuracy(cm), mean_accuracy=mean_accuracy(cm),
                                 iou=tuple(float(iou[c]) for c in order), num_images=n, seconds_per_image=secs / n))
        log.info("%s: mIoU %.4f, pixel accuracy %.4f, %.3f s per image", s.name, out[-1].miou,
                 out[-1].pixel_accuracy, secs / n)
    return EvaluationResult(settings=tuple(out), class_names=tuple(names), order=tuple(order),
                            labels=tuple(paper_labels(names)), split=config.split, num_images=n, device=str(device),
                            seconds=time.perf_counter() - t_start, config=config.to_dict(), model_info=dict(info),
                            masks_dir=None if masks_dir is None else str(masks_dir))


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _check_result(result: object) -> EvaluationResult:
    if not isinstance(result, EvaluationResult):
        raise InputError(f"expected an EvaluationResult from evaluate_store(), got {type(result).__name__}")
    return result


def to_json(result: EvaluationResult) -> dict[str, Any]:
    """The result as plain JSON types (NaN → None): classes in paper order, one entry per
    setting with its scores, per-class IoU (by label) and confusion matrix (store order), the
    resolved config and the model's info."""
    result = _check_result(result)
    settings = []
    for s in result.settings:
        settings.append({
            "name": s.name, "scales": list(s.scales), "flip": s.flip, "crf": s.crf, "miou": s.miou,
            "pixel_accuracy": s.pixel_accuracy, "mean_accuracy": s.mean_accuracy,
            "per_class_iou": dict(zip(result.labels, s.iou)), "num_images": s.num_images,
            "seconds_per_image": s.seconds_per_image, "confusion_matrix": s.confusion,
        })
    return _jsonable({
        "split": result.split, "num_images": result.num_images, "device": result.device, "seconds": result.seconds,
        "classes": list(result.labels), "class_names": [result.class_names[i] for i in result.order],
        "store_class_order": list(result.class_names), "settings": settings, "masks_dir": result.masks_dir,
        "config": result.config, "model": result.model_info,
    })


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.1f}"


def to_markdown(result: EvaluationResult) -> str:
    """A Markdown table in the orientation of the paper's Table II: one row per setting,
    columns = classes in paper order then mIoU, IoU in percent with one decimal ("-" for a
    class absent from ground truth and prediction)."""
    result = _check_result(result)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"IoU (%) on {cell(result.split)} ({result.num_images} images), model {cell(Path(result.config['model']).name)}",
             "",
             "| setting | " + " | ".join(cell(label) for label in result.labels) + " | mIoU |",
             "| :-- | " + " | ".join("--:" for _ in result.labels) + " | --: |"]
    for s in result.settings:
        lines.append(f"| {cell(s.name)} | " + " | ".join(_pct(v) for v in s.iou) + f" | {_pct(s.miou)} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, *, json_path: str | Path | None = None,
                  markdown_path: str | Path | None = None) -> list[Path]:
    """Write :func:`to_json` and/or :func:`to_markdown` to files (folders made as needed);
    returns the paths written."""
    result = _check_result(result)
    written = []
    for path, text in ((json_path, lambda: json.dumps(to_json(result), indent=2, sort_keys=True) + "\n"),
                       (markdown_path, lambda: to_markdown(result))):
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path} is a folder; pass a file name for the output")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text(), encoding="utf-8")
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Settings of ``predict``; saved as ``predict.json`` in the output folder."""

    model: str
    out: str
    multiscale: bool = True
    crf: bool = False
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    device: str = "auto"

    @property
    def setting(self) -> Setting:
        return settings_for(multiscale=self.multiscale, flip=self.inference.flip, crf=self.crf,
                            scales=self.inference.scales)[-1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inference"] = self.inference.to_dict()
        d["setting"] = self.setting.name
        return d


@dataclasses.dataclass(frozen=True)
class PredictSummary:
    out: Path
    written: int
    setting: str
    device: str
    seconds: float


def _image_files(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"image {p} not found; check the path")
    return files


def _check_predict(config: object, paths: object) -> list[Path]:
    from salcurate.imageio import probe_image

    if not isinstance(config, PredictConfig):
        raise InputError(f"expected a PredictConfig, got {type(config).__name__}; build one with PredictConfig(model=..., out=...)")
    if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence):
        raise InputError(f"expected a list of image paths, got {type(paths).__name__}")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; pass a folder with -o")
    if config.crf and not crf_available():
        raise InputError(CRF_MISSING)
    files = _image_files(paths)
    if not files:
        raise InputError("no images given; pass image files (or folders of images) after the model")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise InputError(f"{seen[f.stem]} and {f} would both be written to {out / (f.stem + '.png')}; "
                             "predict them into different folders")
        seen[f.stem] = f
        probe_image(f.read_bytes(), str(f))
    return files


def predict_images(config: PredictConfig, paths: Sequence[str | Path], *,
                   on_start: Callable[[int], None] | None = None,
                   progress: Callable[[int], None] | None = None) -> PredictSummary:
    """Segment image files with a SAL-Net model: ``<out>/<stem>.png`` VOC palette label maps.

    ``paths``: image files or folders of them.  The setting (single- or multi-scale, flip,
    CRF) comes from ``config``.  Every file is checked to decode before the model runs; the
    resolved config, the model's class names and the files go to ``<out>/predict.json``.
    Raises InputError for no images, a missing or undecodable file, two images with one
    stem and an output path that is not a folder.
    """
    from salcurate.imageio import decode_image, write_label_png
    from salcurate.nn.device import resolve_device

    files = _check_predict(config, paths)
    device = resolve_device(config.device)
    setting = config.setting
    t_start = time.perf_counter()
    model, info, prep = load_segmentation_model(config.model, device=device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start(len(files))
    log.info("predicting %d images with %s (%s) on %s", len(files), config.model, setting.name, device)
    for f in files:
        image = decode_image(f.read_bytes())
        labels, _ = _predict_settings(model, prep, image, [setting], config.inference, device,
                                      info["class_names"])[0]
        write_label_png(out / f"{f.stem}.png", labels)
        if progress is not None:
            progress(1)
    record = {"config": config.to_dict(), "class_names": list(info["class_names"]),
              "images": [str(f) for f in files], "device": str(device)}
    (out / "predict.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n", encoding="utf-8")
    return PredictSummary(out=out, written=len(files), setting=setting.name, device=str(device),
                          seconds=time.perf_counter() - t_start)
