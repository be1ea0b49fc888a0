"""``score-model``: model agreement, each proxy judged by a SAL-Net that never saw it (K folds).

The samples that hold a proxy of the chosen set (every split) are dealt into K folds at random
(``seed``).  For each fold k a SAL-Net (``salcurate.nn.salnet``, trained as ``retrain`` trains it,
through :func:`salcurate.training.retrain.train_on_indices`; attention off, so the loss is the
plain cross-entropy of the proxies) learns from the proxies of the other folds and then predicts
the fold's own images, whole, at one scale, without flipping (padded with the mean to a multiple of
16 px, so that images of similar sizes share a batch).  By default each fold model starts from the
tag classifier that made the proxy set (``classifier.pt`` of its ``pseudo-label`` run: backbone,
and its CAMs as the heads, ``salcurate.training.warmstart``) and works at the classifier's scale
(``scale``: its input size over the images' median longer side; training at x0.75-1.25 of it,
prediction at it, probabilities upsampled to the image).  From the classifier's backbone alone,
with random heads and at full scale, the fold models predicted background everywhere on the
realistic benchmark (docs/quality.md).  Per image, from the model's softmax
restricted to background and the image's tags and renormalized over them
(``salcurate.scoring.agreement.restrict``; an untagged image keeps every class), three columns:

* ``agree``: the softmin-pooled probability of the proxy's labels (Lad & Mueller 2023,
  temperature ``temperature``; :func:`salcurate.scoring.agreement.label_quality`): low when
  some region of the proxy carries a label the model finds unlikely there, e.g. the wrong one of
  two tagged look-alike classes.  A proxy label outside background and the tags has probability 0.
* ``mm``: the mIoU of the model's argmax (restricted as above) against the proxy, over the
  classes present in either, background included (``salcurate.scoring.metrics.proxy_miou``).
* ``rr``: reference reliability, the IoU of the model's foreground with the sample's saliency
  map binarized by Otsu's threshold (``salcurate.scoring.reference.threshold_mask``); NaN where
  the store holds no saliency map for the sample.  Low when the saliency map (what SC's
  reference H is made of) misses what a model of the proxies finds.

The columns carry the set's name (``agree:cam`` for set ``cam``) and the resolved settings in
their attributes.  Kill-safe and resumable: per-sample results go to a work area
(``salcurate.data.workarea``) and reach the store in one transaction at the end; each fold's
model trains in ``output/fold<k>-of<K>-<hash>/`` with ``retrain``'s checkpoints (``model.pt``,
``checkpoint.pt``, ``log.jsonl``), so a killed training continues from its last checkpoint and a
finished one is reused; ``output/config.toml`` holds the resolved settings (``--config`` reads it).

Too few proxies: every fold's training set (the other folds' proxies) needs at least
``max(batch_size, 2)`` images, and every fold one image to judge.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.config import Choice, choice, run_only_names, setting, store_setting, to_dict
from salcurate.data import store as store_mod
from salcurate.data.workarea import config_hash, ids_fingerprint, open_work_area, remove_work_area
from salcurate.errors import InputError, StoreError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.nn.cam import scaled_size
from salcurate.nn.device import Device
from salcurate.scoring import agreement
from salcurate.scoring.agreement import SOFTMIN_TEMPERATURE
from salcurate.training.harness import write_config
from salcurate.training.warmstart import CLASSIFIER_FILE, classifier_header, classifier_input_size, classifier_scale

log = logging.getLogger(__name__)

COMMAND = "score-model"
COLUMNS = ("agree", "mm", "rr")
#: Fold models train at the working scale times a random factor from this range.
SCALE_JITTER = (0.75, 1.25)
#: The default training crop: the images' median longer side at scale, within these bounds.
MIN_AUTO_CROP, MAX_AUTO_CROP = 32, 321
#: A fold model trains on at least this many images (and at least batch_size).
MIN_TRAIN_IMAGES = 2
#: Images are predicted padded (bottom and right, with the mean, as training crops are) to a
#: multiple of this many pixels, so that images of similar sizes share a batch (on a CPU a batch
#: of 8 is several times faster per image than one at a time).  The padding depends only on the
#: image's own size, so a resumed run predicts each image exactly as before.
PAD_TO = 16


class ModelBackbone(Choice):
    """The fold models' backbone; ``auto``: the tag classifier's when its weights are used, else resnet18."""

    auto = "auto"
    resnet18 = "resnet18"
    resnet50 = "resnet50"
    resnet101 = "resnet101"
    vgg16 = "vgg16"


@dataclasses.dataclass(frozen=True)
class ScoreModelConfig:
    """Settings of ``score-model``.  The defaults aim at a CPU (3,000 images of 128 px with K = 2
    within 20 minutes on 2 cores); on a GPU more iterations and a larger crop make better judges."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to score (default: the imported one, or the only one).")
    folds: int = setting(2, "K: folds; each proxy is judged by a model trained on the other K - 1 folds.")
    output: str | None = setting(None, "Folder for the fold models (default runs/score-model-PROXY).", short="-o",
                                 run_only=True)
    backbone: ModelBackbone = setting(ModelBackbone.auto, "auto (the tag classifier's backbone with its weights, "
                                                          "else resnet18), resnet18, resnet50, resnet101 or vgg16.")
    backbone_weights: str = setting("auto", "auto (the tag classifier that made the proxy set, from `salcurate "
                                            "pseudo-label`: its backbone, and its CAMs as the segmentation head), a "
                                            "classifier.pt or backbone .pth file, imagenet, or none.")
    scale: float | None = setting(None, "Scale the fold models train (x0.75-1.25) and predict at; default: the tag "
                                        "classifier's (its input size over the images' median longer side) when "
                                        "starting from it, else 1.")
    crop: int | None = setting(None, "Random training crop side; default: the images' median longer side at scale "
                                     "(a multiple of 8, 32-321).  Images are predicted whole.")
    batch_size: int = setting(8, "Images per training iteration.")
    iterations: int = setting(300, "Training iterations per fold.")
    lr: float = setting(1e-3, "Base learning rate (poly schedule; heads at 1x from a tag classifier, else 10x); "
                              "1e-2 diverged from a classifier's backbone.")
    temperature: float = setting(SOFTMIN_TEMPERATURE, "Softmin temperature of the agree score (Lad & Mueller "
                                                      "2023: 0.1; smaller is closer to the worst pixel).")
    seed: int = setting(0, "Seed of the folds, the initial weights, the sample order and the augmentation.")
    device: Device = setting(Device.auto, "auto (CUDA when present, bf16), cpu or cuda.", run_only=True)
    predict_batch: int = setting(16, "Images per prediction batch (images of one size, padded to a multiple of "
                                     f"{PAD_TO} px).", min=1, run_only=True)
    workers: int = setting(0, "Data-loader processes while training (0: in the main process).", min=0,
                           run_only=True)
    checkpoint_every: int = setting(50, "Training iterations between checkpoints (a killed fold loses at most "
                                        "this many).", min=1, run_only=True)
    overwrite: bool = setting(False, "Replace model-agreement columns made with another config.", run_only=True)

    def scoring(self) -> dict[str, Any]:
        """The settings the scores depend on (saved with the columns)."""
        d = to_dict(self)
        for k in ("store", *run_only_names(ScoreModelConfig)):
            d.pop(k)
        return d


@dataclasses.dataclass(frozen=True)
class ScoreModelResult(Result):
    """What ``score-model`` did: the columns it wrote, the folds, the fold models and timings."""

    columns: dict[str, str]  # role -> column name in the store ("agree" -> "agree:cam")
    scoring: dict[str, Any]
    output: str
    models: tuple[str, ...]  # each fold's model.pt ("" for a fold with nothing left to judge)
    fold_sizes: tuple[int, ...]  # images judged by each fold's model
    train_loss: tuple[float | None, ...]  # each fold model's last logged training loss
    computed: int
    resumed: int
    skipped_no_proxy: int
    nothing_to_do: bool
    seconds: float
    train_seconds: float
    predict_seconds: float
    mean_agree: float | None


# ----------------------------------------------------------------------------------------
# Checks and resolution
# ----------------------------------------------------------------------------------------
def check_config(config: ScoreModelConfig) -> ScoreModelConfig:
    """The config with its choices as enums; raises InputError for a bad setting."""
    if isinstance(config.folds, bool) or config.folds < 2:
        raise InputError(f"folds must be at least 2 (each proxy is judged by a model trained on the proxies "
                         f"outside its fold), got {config.folds}", param="folds")
    for name, low in (("batch_size", 1), ("iterations", 1), ("crop", 16), ("checkpoint_every", 1),
                      ("predict_batch", 1)):
        if getattr(config, name) is not None and getattr(config, name) < low:
            raise InputError(f"{name} must be at least {low}, got {getattr(config, name)}", param=name)
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise InputError(f"lr must be a positive number, got {config.lr}", param="lr")
    if config.scale is not None and not (0 < config.scale <= 8 and math.isfinite(config.scale)):
        raise InputError(f"scale must be in (0, 8], got {config.scale}; leave it unset for the tag classifier's",
                         param="scale")
    if not (config.temperature > 0 and math.isfinite(config.temperature)):
        raise InputError(f"temperature must be a positive number, got {config.temperature}", param="temperature")
    if config.workers < 0:
        raise InputError(f"workers must be 0 or more, got {config.workers}", param="workers")
    return dataclasses.replace(config, backbone=choice(ModelBackbone, config.backbone, "backbone"),
                               device=choice(Device, config.device, "device"))


def min_proxies(folds: int, batch_size: int) -> int:
    """The fewest proxies with which every fold judges an image and trains on ``max(batch_size, 2)``."""
    need = max(batch_size, MIN_TRAIN_IMAGES)
    n = folds
    while n - -(-n // folds) < need:  # the largest fold is ceil(n / K); the rest train its model
        n += 1
    return n


def assign_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """``(n,)`` int: the fold (0..K-1) of each of n samples; a seeded shuffle dealt round-robin, so
    fold sizes differ by at most one."""
    if n < 0 or folds < 1:
        raise InputError(f"assign_folds expects n >= 0 and folds >= 1, got {n} and {folds}")
    out = np.empty(n, np.int64)
    out[np.random.default_rng([seed, 0x5C0DE]).permutation(n)] = np.arange(n) % folds
    return out


def _classifier_run(st: store_mod.MaskStore, proxy: str) -> tuple[Path | None, str | None, str]:
    """The pseudo-label run folder that made ``proxy`` (None if it was not made so), its backbone, and why not."""
    cfg = st.proxy_run_config(proxy)
    if cfg is None:
        made_by = st.map_meta(proxy).get("command") or "import"
        return None, None, f"proxy set {proxy!r} was made by `salcurate {made_by}`, not by `salcurate pseudo-label`"
    out = cfg.get("output")
    if not out:
        return None, None, f"proxy set {proxy!r} does not record its pseudo-label run folder"
    folder = Path(out)
    classifier = st.locate(folder / CLASSIFIER_FILE)
    if classifier.is_file():
        return classifier.parent.resolve(), cfg.get("backbone"), ""
    return None, cfg.get("backbone"), (f"the classifier of proxy set {proxy!r} is not in its run folder "
                                       f"{folder / CLASSIFIER_FILE} (moved or deleted?)")


def _resolve_weights(config: ScoreModelConfig, st: store_mod.MaskStore, proxy: str
                     ) -> tuple[str, str, dict[str, Any] | None]:
    """The backbone, the weights (``none``, ``imagenet`` or an absolute file path) the fold models start
    from, and the tag classifier's settings when the weights are one (:func:`warmstart.classifier_header`)."""
    weights = config.backbone_weights
    backbone = config.backbone
    if weights == "auto":
        folder, cls_backbone, why = _classifier_run(st, proxy)
        if folder is None:
            raise InputError(f"backbone_weights auto starts from the tag classifier that made the proxy set, but "
                             f"{why}; pass backbone_weights (a classifier.pt or .pth file, imagenet, or none)",
                             param="backbone_weights")
        if backbone not in (ModelBackbone.auto, cls_backbone):
            raise InputError(f"the tag classifier of proxy set {proxy!r} is a {cls_backbone}, not a {backbone}; "
                             f"pass backbone auto (or {cls_backbone}), or other backbone_weights",
                             param=("backbone", "backbone_weights"))
        return str(cls_backbone), str(folder / CLASSIFIER_FILE), classifier_header(folder / CLASSIFIER_FILE)
    backbone_name = "resnet18" if backbone == ModelBackbone.auto else str(backbone)
    if weights in ("none", "imagenet"):
        return backbone_name, weights, None
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"backbone_weights {weights}: no such file; pass a pseudo-label run's classifier.pt, a "
                         f"torchvision {backbone_name} state dict (.pth), imagenet, none, or auto",
                         param="backbone_weights")
    header = classifier_header(path)
    if header is not None and backbone == ModelBackbone.auto:
        backbone_name = str((header.get("config") or {}).get("backbone", backbone_name))
    return backbone_name, str(path.resolve()), header


def _resolve_scale(config: ScoreModelConfig, st: store_mod.MaskStore, with_proxy: np.ndarray,
                   header: dict[str, Any] | None) -> tuple[float, int]:
    """The scale the fold models work at and their training crop (settings, or their defaults);
    ``header``: the settings of the tag classifier they start from (None: another start)."""
    heights, widths = st.heights[with_proxy], st.widths[with_proxy]
    scale = config.scale
    if scale is None:
        size = classifier_input_size(header) if header is not None else None
        scale = 1.0 if size is None else classifier_scale(size, heights, widths)
    crop = config.crop
    if crop is None:
        side = float(np.median(np.maximum(heights, widths))) * scale
        crop = int(min(MAX_AUTO_CROP, max(MIN_AUTO_CROP, 8 * math.ceil(side / 8))))
    return float(scale), int(crop)


def resolve_config(config: ScoreModelConfig, st: store_mod.MaskStore) -> ScoreModelConfig:
    """Check the config against the store: the proxy set, enough proxies, the backbone and its weights."""
    config = check_config(config)
    if not st.proxy_names():
        raise StoreError(f"{st.path}: the store has no proxy masks; import them with `salcurate import ... --pseudo "
                         "DIR` or make a set with `salcurate pseudo-label`")
    proxy = st.resolve_proxy(config.proxy)
    n = int(st.has_map(proxy).sum())
    need = min_proxies(config.folds, config.batch_size)
    if n < need:
        raise InputError(f"proxy set {proxy!r} has {n} proxies; {config.folds}-fold model agreement needs at least "
                         f"{need}: each fold's model trains on the proxies outside its fold, at least "
                         f"{max(config.batch_size, MIN_TRAIN_IMAGES)} images (batch_size, and at least "
                         f"{MIN_TRAIN_IMAGES}); make more proxies, or lower folds or batch_size",
                         param=("folds", "batch_size"))
    backbone, weights, header = _resolve_weights(config, st, proxy)
    config = dataclasses.replace(config, proxy=proxy, backbone=ModelBackbone(backbone), backbone_weights=weights)
    scale, crop = _resolve_scale(config, st, np.flatnonzero(st.has_map(proxy)), header)
    return dataclasses.replace(config, scale=scale, crop=crop)


# ----------------------------------------------------------------------------------------
# One fold: training and prediction
# ----------------------------------------------------------------------------------------
class _FoldEvents(Events):
    """Passes a fold's training events on, its progress bar labelled with the fold."""

    def __init__(self, events: Events, label: str) -> None:
        self.events, self.label = events, label

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.events.start(total, done, label=f"{self.label} training")

    def advance(self, n: int = 1, **info: Any) -> None:
        self.events.advance(n, **info)

    def note(self, message: str) -> None:
        self.events.note(f"{self.label}: {message}")

    def metrics(self, record: dict[str, Any]) -> None:
        self.events.metrics(record)


def _train_fold(config: ScoreModelConfig, folder: Path, train_idx: np.ndarray, events: Events) -> tuple[str, Any]:
    """Train (or resume, or reuse) one fold's model; returns its model file and last training loss."""
    from salcurate.training.retrain import RetrainConfig, train_on_indices

    rc = RetrainConfig(
        store=config.store, selection="none", output=str(folder), proxy=config.proxy, backbone=str(config.backbone),
        backbone_weights=config.backbone_weights, attention="off", lam=0.0, batch_size=config.batch_size,
        crop=config.crop, scale_min=SCALE_JITTER[0] * config.scale, scale_max=SCALE_JITTER[1] * config.scale,
        val_scale=config.scale,
        lr=config.lr, max_iter=config.iterations, seed=config.seed, device=config.device,
        workers=config.workers, checkpoint_every=config.checkpoint_every, log_every=min(10, config.iterations),
        tensorboard=False, resume=(folder / "checkpoint.pt").is_file())
    res = train_on_indices(rc, train_idx, events=events)
    return res.model, res.final.get("loss")


def padded_size(height: np.ndarray, width: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``(n, 2)``: each image's height and width at ``scale``, rounded up to a multiple of :data:`PAD_TO`."""
    return -(-scaled_size(height, width, scale) // PAD_TO) * PAD_TO


def _size_batches(st: store_mod.MaskStore, indices: np.ndarray, batch: int, scale: float) -> Iterator[np.ndarray]:
    """``indices`` in batches of at most ``batch`` images of one padded size (they stack into one tensor)."""
    shapes = padded_size(st.heights[indices], st.widths[indices], scale)
    order = np.lexsort((indices, shapes[:, 1], shapes[:, 0]))
    idx, shp = indices[order], shapes[order]
    start = 0
    while start < len(idx):
        end = start + 1
        while end < len(idx) and end - start < batch and (shp[end] == shp[start]).all():
            end += 1
        yield idx[start:end]
        start = end


def score_image(probs: np.ndarray, proxy: np.ndarray, tags: np.ndarray | None, saliency: np.ndarray | None, *,
                temperature: float = SOFTMIN_TEMPERATURE) -> np.ndarray:
    """``agree``, ``mm`` and ``rr`` of one image from a model's class probabilities.

    probs: ``(C + 1, H, W)`` float, the model's softmax at the image's size; proxy: ``(H, W)``
    uint8 (255 = ignore); tags: ``(C,)`` bool, or None for an untagged image (every class kept);
    saliency: ``(H, W)`` uint8, or None → ``(3,)`` float32 [agree, mm, rr] (rr NaN without saliency).
    """
    from salcurate.scoring.metrics import proxy_miou
    from salcurate.scoring.reference import threshold_mask

    num_classes = probs.shape[0] - 1
    classes = (np.arange(num_classes + 1) if tags is None
               else np.concatenate([[0], np.flatnonzero(tags) + 1]).astype(np.int64))
    kept = agreement.restrict(probs, classes)
    pred = classes[kept.argmax(axis=0)].astype(np.uint8)
    agree = agreement.label_quality(kept, classes, proxy, temperature=temperature)
    mm = proxy_miou(proxy, pred, num_classes)
    rr = (float("nan") if saliency is None
          else agreement.mask_iou(pred != 0, threshold_mask(saliency, threshold="otsu")))
    return np.array([agree, mm, rr], np.float32)


def _resized(x: Any, size: tuple[int, int]) -> Any:
    """``(K, H, W)`` float tensor -> ``(K, *size)``, bilinear (unchanged when already that size)."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _predict_fold(config: ScoreModelConfig, model_file: str, todo: np.ndarray, area: Any, events: Events) -> None:
    """Judge the fold's images ``todo`` with its model; each batch's results go to the work area."""
    import torch
    import torch.nn.functional as F

    from salcurate.nn.device import resolve_device
    from salcurate.nn.salnet import load_model, preprocess
    from salcurate.training.harness import Precision

    precision = Precision(resolve_device(config.device))
    model, _ = load_model(model_file, map_location=precision.device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    with store_mod.MaskStore(config.store) as st:
        has_sal = st.has_map("saliency") if "saliency" in st.map_names() else np.zeros(len(st), bool)
        assert config.scale is not None  # resolved by resolve_config
        scale = float(config.scale)
        for batch in _size_batches(st, todo, config.predict_batch, scale):
            ph, pw = (int(v) for v in padded_size(st.heights[batch[:1]], st.widths[batch[:1]], scale)[0])
            sizes = scaled_size(st.heights[batch], st.widths[batch], scale)
            x = torch.stack([F.pad(t, (0, pw - t.shape[2], 0, ph - t.shape[1]))  # 0 = the mean after normalizing
                             for t in (_resized(preprocess(st.image(int(i))), (int(sh), int(sw)))
                                       for i, (sh, sw) in zip(batch, sizes))])
            with torch.no_grad(), precision.autocast():
                logits = model(precision.inputs(x)).attended
            probs = torch.softmax(logits.float(), dim=1)  # upsampled as probabilities, as `evaluate` does
            probs = F.interpolate(probs, size=(ph, pw), mode="bilinear", align_corners=False).cpu()
            values = []
            for j, i in enumerate(batch.tolist()):
                h, w = int(st.heights[i]), int(st.widths[i])
                p = _resized(probs[j, :, :int(sizes[j, 0]), :int(sizes[j, 1])], (h, w)).numpy()
                tags = st.tags[i] if st.has_tags[i] else None
                sal = st.map("saliency", i) if has_sal[i] else None
                values.append(score_image(p, st.map(config.proxy, i), tags, sal, temperature=config.temperature))
            area.write(batch.tolist(), np.stack(values))
            events.advance(len(batch))


# ----------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------
def _existing(st: store_mod.MaskStore, names: dict[str, str], scoring: dict[str, Any], overwrite: bool,
              has_proxy: np.ndarray) -> bool:
    """Whether complete columns with this config exist; refuses other ones without ``overwrite``."""
    present = [n for n in names.values() if n in st.score_names()]
    if not present:
        return False
    same = all(st.score_meta(n).get("config") == scoring for n in present)
    if not same and not overwrite:
        raise StoreError(f"{st.path}: the columns {', '.join(present)} exist with another config; pass overwrite "
                         "to replace them", param="overwrite")
    return same and len(present) == len(names) and bool(np.isfinite(st.score(names["agree"])[has_proxy]).all())


def run(config: ScoreModelConfig, *, events: Events | None = None) -> ScoreModelResult:
    """Train K fold models, judge every proxy with the model that never saw it, store agree, mm and rr.

    Resumes a killed run with the same config (the work area and the fold checkpoints); with
    complete columns of the same config it does nothing.  Events: a note per fold, the fold's
    training (``start(iterations)``, ``advance`` per iteration) and its scoring
    (``start(images)``, ``advance`` per batch of images).
    """
    events = events or NO_EVENTS
    started = time.time()
    path = Path(config.store)
    with store_mod.MaskStore(path) as st:
        config = resolve_config(config, st)
        proxy = config.proxy
        assert proxy is not None
        scoring = config.scoring()
        names = {c: store_mod.proxy_column(c, proxy) for c in COLUMNS}
        has_proxy = st.has_map(proxy)
        ids = st.ids
        complete = _existing(st, names, scoring, config.overwrite, has_proxy)
        area_config = {**scoring, "proxy_stamp": st.proxy_stamp(proxy)}
    with_proxy = np.flatnonzero(has_proxy)
    fold_of = assign_folds(len(with_proxy), config.folds, config.seed)
    folds = [with_proxy[fold_of == k] for k in range(config.folds)]
    sizes = tuple(len(f) for f in folds)
    output = Path(config.output if config.output is not None else Path("runs") / f"score-model-{proxy}")
    config = dataclasses.replace(config, output=str(output))
    tag = config_hash({**area_config, "ids": ids_fingerprint(ids)})
    dirs = [output / f"fold{k + 1}-of{config.folds}-{tag}" for k in range(config.folds)]
    if complete:
        log.info("%s with this config is complete in %s; nothing to do", names["agree"], path)
        return ScoreModelResult(names, scoring, str(output), tuple(str(d / "model.pt") for d in dirs), sizes,
                                tuple(_logged_loss(d) for d in dirs), 0, 0, int((~has_proxy).sum()), True,
                                time.time() - started, 0.0, 0.0, None)

    train_seconds = predict_seconds = 0.0
    models: list[str] = []
    losses: list[float | None] = []
    with open_work_area(path, COMMAND, area_config, ids=ids, columns=COLUMNS) as area:
        done = area.done
        resumed = int((done & has_proxy).sum())
        computed = 0
        for k, (fold, folder) in enumerate(zip(folds, dirs)):
            label = f"fold {k + 1}/{config.folds}"
            todo = fold[~done[fold]]
            if len(todo) == 0:
                models.append(str(folder / "model.pt") if (folder / "model.pt").is_file() else "")
                losses.append(_logged_loss(folder))
                continue
            train_idx = np.concatenate([f for j, f in enumerate(folds) if j != k])
            events.note(f"{label}: a model of {len(train_idx)} proxies judges {len(fold)} "
                        f"({len(fold) - len(todo)} done before)")
            t0 = time.time()
            model_file, loss = _train_fold(config, folder, train_idx, _FoldEvents(events, label))
            t1 = time.time()
            events.start(len(fold), len(fold) - len(todo), label=f"{label} scoring")
            _predict_fold(config, model_file, todo, area, events)
            predict_seconds += time.time() - t1
            train_seconds += t1 - t0
            models.append(model_file)
            losses.append(loss)
            computed += len(todo)
        values = area.values()
        columns = {names[c]: np.where(has_proxy, values[c], np.nan).astype(np.float32) for c in COLUMNS}
        resolved = {**to_dict(config), "columns": names, "fold_sizes": list(sizes), "models": models,
                    "train_loss": losses}
        with store_mod.transaction(path, command=COMMAND, config=resolved, started=started) as tx:
            tx.put_scores(columns, config=scoring, command=COMMAND, overwrite=True)
        remove_work_area(area)
    write_config(output / "config.toml", config, command=COMMAND)
    agree = columns[names["agree"]]
    log.info("judged %d proxies of set %r with %d fold models in %s", computed, proxy, config.folds, path)
    return ScoreModelResult(names, scoring, str(output), tuple(models), sizes, tuple(losses), computed, resumed,
                            int((~has_proxy).sum()), False, time.time() - started, train_seconds, predict_seconds,
                            float(np.nanmean(agree)) if has_proxy.any() else None)


def _logged_loss(folder: Path) -> float | None:
    """The last training loss a fold's model file records (None without one)."""
    from salcurate.nn.salnet import read_model_file

    model = folder / "model.pt"
    if not model.is_file():
        return None
    loss = (read_model_file(model).get("metrics") or {}).get("loss")
    return None if loss is None else float(loss)
