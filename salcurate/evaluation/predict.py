"""``predict``: segment image files with a SAL-Net model, one VOC palette label map per image.

The prediction is one setting of :mod:`salcurate.evaluation.inference`: multi-scale (scales
0.5, 0.75, 1.0 fused by max; default) or single-scale, optionally with mirrored images and the
dense CRF, exactly as ``evaluate`` computes that setting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from salcurate.config import setting, to_dict
from salcurate.errors import InputError
from salcurate.evaluation import inference
from salcurate.evaluation.inference import (
    InferenceConfig,
    Setting,
    check_output_folder,
    predict_settings,
    require_crf,
    settings_for,
)
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.device import Device

log = logging.getLogger(__name__)

#: The files of an image folder that ``predict`` reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Settings of ``predict``; saved in ``predict.json`` in the output folder."""

    model: str = setting(help="SAL-Net model file or `salcurate retrain` run folder (its model.pt).", argument=True,
                         metavar="MODEL")
    images: tuple[str, ...] = setting((), "Image files, or folders of images.", argument=True, metavar="IMAGES",
                                      multiple=True)
    output: str = setting("predictions", "Folder for the label maps (<stem>.png, VOC palette).", short="-o")
    multiscale: bool = setting(True, "Multi-scale inference (max fusion).")
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    device: Device = setting(Device.auto, "auto (CUDA when present), cpu or cuda.")

    def prediction_setting(self) -> Setting:
        """The one setting the label maps are made with."""
        return settings_for(multiscale=self.multiscale, flip=self.inference.flip, crf=self.inference.crf,
                            scales=self.inference.scales)[-1]


@dataclasses.dataclass(frozen=True)
class PredictResult(Result):
    """What :func:`run` wrote: ``written`` label maps in ``output``, made with ``setting``."""

    output: str
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


def check_predict_config(config: object) -> list[Path]:
    """The checks made before the model is loaded; returns the image files.

    The output must be a folder (or not exist yet), pydensecrf must be there when crf is on, and
    every image must exist and decode, with no two of the same stem (they would be written to
    one file).
    """
    from salcurate.imageio import probe_image

    if not isinstance(config, PredictConfig):
        raise InputError(f"expected a PredictConfig, got {type(config).__name__}; "
                         "build one with PredictConfig(model=..., images=..., output=...)")
    if isinstance(config.images, (str, Path)) or not isinstance(config.images, Sequence):
        raise InputError(f"expected a list of image paths as images, got {type(config.images).__name__}",
                         param="images")
    output = Path(config.output)
    check_output_folder(output, "output")
    require_crf(config.inference.crf)
    files = _image_files(config.images)
    if not files:
        raise InputError("no images given; pass image files (or folders of images)")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise InputError(f"{seen[f.stem]} and {f} would both be written to {output / (f.stem + '.png')}; "
                             "predict them into different folders")
        seen[f.stem] = f
        probe_image(f.read_bytes(), str(f))
    return files


def run(config: PredictConfig, *, events: Events | None = None) -> PredictResult:
    """Segment image files with a SAL-Net model: ``<output>/<stem>.png`` VOC palette label maps.

    ``config.images``: image files or folders of them.  The setting (single- or multi-scale,
    flip, CRF) comes from ``config``.  Every file is checked to decode before the model runs;
    the resolved config, the model's class names and the files go to ``<output>/predict.json``.
    ``events.start(total)``, then ``events.advance(1)`` per image.  Raises InputError for no
    images, a missing or undecodable file, two images with one stem and an output path that is
    not a folder.
    """
    from salcurate.imageio import decode_image, write_label_png
    from salcurate.nn.device import resolve_device

    events = events or NO_EVENTS
    files = check_predict_config(config)
    device = resolve_device(config.device)
    chosen = config.prediction_setting()
    t_start = time.perf_counter()
    model, info, prep = inference.load_segmentation_model(config.model, device=device)
    chosen = inference.at_model_scale([chosen], inference.model_scale(info))[0]
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    events.start(len(files))
    log.info("predicting %d images with %s (%s) on %s", len(files), config.model, chosen.name, device)
    for f in files:
        image = decode_image(f.read_bytes())
        labels, _ = predict_settings(model, prep, image, [chosen], config.inference, device, info["class_names"])[0]
        write_label_png(output / f"{f.stem}.png", labels)
        events.advance(1)
    record = {"config": {**to_dict(config), "setting": chosen.name}, "class_names": list(info["class_names"]),
              "images": [str(f) for f in files], "device": str(device)}
    (output / "predict.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return PredictResult(output=str(output), written=len(files), setting=chosen.name, device=str(device),
                         seconds=time.perf_counter() - t_start)
