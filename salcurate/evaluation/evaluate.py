"""``evaluate``: a SAL-Net model's segmentations scored against a store's ground truth.

``run`` runs the model over the samples of a store's split that have ground truth and fills one
confusion matrix per inference setting in one pass (NOTES.md "SAL-Net": the paper reports
single-scale, multi-scale and +CRF results separately):

* ``single-scale``: the image at scale 1.0;
* ``multi-scale`` (default on): scales 0.5, 0.75, 1.0 fused by max, ``+ flip`` with mirrored
  images (``single-scale + flip`` when only flip is asked for);
* ``+ CRF`` (off by default): the dense CRF on the last of these.

All scales are relative to the model's working scale (``retrain``'s ``val_scale``, recorded in
the model file; 1 unless it was trained at another scale, e.g. started from a tag classifier).

Passes shared by settings (scale 1.0) run once; each setting's seconds per image are the time
of its own passes, fusion (and CRF), as if it ran alone, after one untimed warm-up on the first
image; decoding is not counted.  mIoU is over C + 1 classes from the confusion matrix summed
over the split, 255 ignored (:mod:`salcurate.segmentation_metrics`).  :func:`to_json`,
:func:`to_markdown` and :func:`write_outputs` give the result as the paper's Table II.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import setting, store_setting, to_dict
from salcurate.errors import InputError, StoreError
from salcurate.evaluation import inference
from salcurate.evaluation.inference import (
    InferenceConfig,
    check_output_folder,
    predict_settings,
    require_crf,
    settings_for,
    warm_up,
)
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.device import Device
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


# ------------------------------------------------------------------------------------------
# Settings and result
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``evaluate``; the resolved values are saved with the results (``to_json``)."""

    store: str = store_setting()
    model: str | None = setting(None, "SAL-Net model file or `salcurate retrain` run folder (its model.pt).",
                                short="-m")
    split: str = setting("val", "Split to evaluate; its samples with ground truth are used.")
    multiscale: bool = setting(True, "Also report multi-scale inference.")
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.")
    save_masks: str | None = setting(None, "Write the last setting's masks here (VOC palette PNGs).")
    limit: int | None = setting(None, "Evaluate only the first N images.", min=1)

    def settings(self) -> list[inference.Setting]:
        """The settings this evaluation reports, in order."""
        return settings_for(multiscale=self.multiscale, flip=self.inference.flip, crf=self.inference.crf,
                            scales=self.inference.scales)


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
class EvaluationResult(Result):
    """What :func:`run` found; ``config`` is the resolved :class:`EvaluateConfig` (``to_dict``)
    with the names of the settings it reports."""

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

    def to_dict(self) -> dict[str, Any]:
        """:func:`to_json`."""
        return to_json(self)


# ------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------
def check_evaluate_config(config: object) -> EvaluateConfig:
    """The checks made before the store is opened: a model given, limit >= 1, save_masks not a
    file, pydensecrf there when crf is on."""
    if not isinstance(config, EvaluateConfig):
        raise InputError(f"expected an EvaluateConfig, got {type(config).__name__}; "
                         "build one with EvaluateConfig(store=..., model=...)")
    if config.model is None:
        raise InputError("no SAL-Net checkpoint given; set model to a file (or run folder) written by "
                         "`salcurate retrain`", param="model")
    if config.limit is not None and (isinstance(config.limit, bool) or not isinstance(config.limit, int)
                                     or config.limit < 1):
        raise InputError(f"limit must be a whole number >= 1, got {config.limit!r}", param="limit")
    check_output_folder(config.save_masks, "save_masks")
    require_crf(config.inference.crf)
    return config


def _check_class_names(model_path: str, model_names: Sequence[str], store_path: Path,
                       store_names: Sequence[str]) -> None:
    if tuple(model_names) == tuple(store_names):
        return
    if len(model_names) != len(store_names):
        detail = f"{len(model_names)} classes in the model, {len(store_names)} in the store"
    else:
        k = next(i for i, (a, b) in enumerate(zip(model_names, store_names)) if a != b)
        detail = f"class {k} is {model_names[k]!r} in the model and {store_names[k]!r} in the store"
    raise InputError(f"the class names of model {model_path} differ from those of store {store_path} ({detail}); "
                     "evaluate a model trained on this store's class list")


def _gt_indices(st: Any, split: str) -> np.ndarray:
    """Indices of the split's samples that have ground truth (errors say where there is some)."""
    splits = st.split_names()
    if split not in splits:
        raise StoreError(f"{st.path}: no split {split!r} in the store (it has: {', '.join(splits)}); "
                         "choose one of them")
    if "gt" not in st.map_names():
        raise StoreError(f"{st.path}: the store holds no ground truth; import it, e.g. `salcurate import voc ROOT "
                         f"-o {st.path.name} --append --split val`")
    has_gt = st.has_map("gt")
    chosen = np.flatnonzero((st.splits == split) & has_gt)
    if not len(chosen):
        counts = {s: int(((st.splits == s) & has_gt).sum()) for s in splits}
        with_gt = ", ".join(f"{s} ({n})" for s, n in counts.items() if n) or "none"
        raise StoreError(f"{st.path}: split {split!r} has no samples with ground truth; splits with ground truth: "
                         f"{with_gt}; pass split with one of them", param="split")
    return chosen


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------
def run(config: EvaluateConfig, *, events: Events | None = None) -> EvaluationResult:
    """Evaluate a SAL-Net model on the samples of ``config.split`` that have ground truth.

    Fills one ``(K, K)`` confusion matrix per setting (:meth:`EvaluateConfig.settings`) in one
    pass over the images and returns mIoU, pixel accuracy, mean accuracy and per-class IoU
    (paper order) for each; with ``save_masks`` the last setting's label maps go there as
    ``<id>.png`` (VOC palette).  ``events.start(total)`` once the images are known,
    ``events.advance(1)`` after each.  Raises InputError / StoreError for a missing or foreign
    model file, class names that differ from the store's, a split without ground truth and an
    unusable device.
    """
    from salcurate.data.store import MaskStore
    from salcurate.imageio import write_label_png
    from salcurate.nn.device import resolve_device

    events = events or NO_EVENTS
    config = check_evaluate_config(config)
    assert config.model is not None
    settings = config.settings()
    device = resolve_device(config.device)
    t_start = time.perf_counter()
    with MaskStore(config.store) as st:
        chosen = _gt_indices(st, config.split)
        if config.limit is not None:
            chosen = chosen[: config.limit]
        names = st.class_names
        model, info, prep = inference.load_segmentation_model(config.model, device=device)
        _check_class_names(config.model, info["class_names"], st.path, names)
        base = inference.model_scale(info)
        if base != 1.0:
            log.info("%s works at scale %g of the images (retrain's val_scale): its scales are relative to that",
                     config.model, base)
            settings = inference.at_model_scale(settings, base)
        masks_dir = None
        if config.save_masks is not None:
            masks_dir = Path(config.save_masks)
            masks_dir.mkdir(parents=True, exist_ok=True)
        k = len(names)
        cms = [np.zeros((k, k), np.int64) for _ in settings]
        seconds = [0.0 for _ in settings]
        log.info("evaluating %s on %d images of split %r (%s) on %s", config.model, len(chosen), config.split,
                 ", ".join(s.name for s in settings), device)
        events.start(len(chosen))
        warm_up(model, prep, st.image(int(chosen[0])), settings, device)
        for i in chosen:
            i = int(i)
            image, gt = st.image(i), st.map("gt", i)
            results = predict_settings(model, prep, image, settings, config.inference, device, names)
            for j, (labels, secs) in enumerate(results):
                cms[j] += confusion_matrix(labels, gt, num_classes=k)
                seconds[j] += secs
            if masks_dir is not None:
                write_label_png(masks_dir / f"{Path(st.ids[i]).name}.png", results[-1][0])
            events.advance(1)
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
                            seconds=time.perf_counter() - t_start,
                            config={**to_dict(config), "settings": [s.name for s in settings]},
                            model_info=dict(info), masks_dir=None if masks_dir is None else str(masks_dir))


# ------------------------------------------------------------------------------------------
# The result as JSON and as the paper's Table II
# ------------------------------------------------------------------------------------------
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
        raise InputError("expected an EvaluationResult from salcurate.evaluation.evaluate.run, "
                         f"got {type(result).__name__}")
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

    model_name = Path(result.config["model"]).name
    lines = [f"IoU (%) on {cell(result.split)} ({result.num_images} images), model {cell(model_name)}",
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
