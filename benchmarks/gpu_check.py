"""GPU check (issue #14): every heavy command on one GPU at the paper's settings, measured.

On the GPU machine (bare: python3 with torch, no internet), from the repository root, with
``$OUT`` the folder that comes back; give the command 480 s (``timeout_s``): the install takes
~15 s, the script starts no new work after --budget-s and the timeout stops it in any case (the
script also runs from the source tree should the install fail)::

    python3 -m pip install -q --no-deps --no-build-isolation -e . ;
    timeout 450 python3 benchmarks/gpu_check.py --device cuda --budget-s 400 --out "$OUT"

A rerun of what a first run left out (section names below; lines are appended)::

    timeout 300 python3 benchmarks/gpu_check.py --device cuda --budget-s 270 --out "$OUT" \\
        --only salnet_compiled,scorer_compiled

Here, on the CPU, in seconds (``tests/test_gpu_check.py`` runs it)::

    .venv/bin/python benchmarks/gpu_check.py --device cpu --smoke --out bench-out/gpu-check

Every measurement appends one JSON line to ``OUT/figures.jsonl`` as soon as it is measured,
so a timeout keeps what was done: ``name``, ``section``, ``status`` (ok, error or skipped),
``figures`` (numbers only), ``info`` (words), ``error`` or ``skipped`` (why), ``device``,
``torch``, ``date``, ``seconds``.  Each section ends with a line named after it.  A failing
measurement is a line with its error, never the end of the run; when the time budget is near,
the remaining sections are skipped, a line each.  ``--smoke`` runs every section with tiny
sizes and counts (a small scorer, resnet18, 40 x 60 images, no torch.compile).

Sections, most important first (:data:`SECTIONS`):

* ``environment``: GPU, memory, bf16 support, torch, CUDA, compilers;
* ``matmul``: bf16 and fp32 matrix products, TFLOP/s (the yardstick of the figures below);
* ``gpu_tests``: ``pytest -m gpu tests/test_gpu.py`` (bf16 + channels-last against fp32, GDN in
  bf16, train-scorer, score-fine, retrain 20 iterations with resume, evaluate, predict on CUDA);
* ``torchrun_nccl``: ``torchrun --nproc_per_node 1 -m salcurate retrain`` with NCCL (its test);
* ``scorer_forward``: the scorer (Table I, 256 x 256) forward, images/s and TFLOP/s, bf16 and
  fp32, at batch 64 and the best batch (eager);
* ``salnet_train``: SAL-Net vgg16 and resnet101, ms per iteration at batch 7, 321 x 321, fp32
  and bf16, with peak GPU memory (``benchmarks/bench_retrain.py``, eager);
* ``score_fine``: ``score-fine`` end to end on a synthetic store of 2,000 VOC-sized (500 x 375)
  samples, images/s, and where the time goes (store, decode, resize, model);
* ``train_scorer``: ``train-scorer`` seconds per epoch of 10,000 synthesized samples at batch 8,
  the training step per sample by batch, and an epoch at the fastest batch;
* ``evaluate``: ``evaluate`` images/s at 500 x 375, single-scale and multi-scale (0.5, 0.75,
  1.0) + flip, vgg16;
* ``cam_proxies``: ``pseudo-label``'s proxy phase, images/s and minutes for 10,582 VOC images;
* ``score_model``: ``score-model`` end to end (K = 2, the CAM backbone at 321 px) and its cost
  model for 10,582 VOC images;
* ``scorer_compiled``, ``salnet_compiled``: the same with ``torch.compile``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the sibling benchmarks (bench_scorer, bench_retrain), and salcurate's source should the install have failed
sys.path[:0] = [str(HERE), str(ROOT)]
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):  # for the child processes too
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import bench_retrain  # noqa: E402
import bench_scorer  # noqa: E402
import torch  # noqa: E402

from salcurate.errors import InputError  # noqa: E402
from salcurate.events import Events  # noqa: E402
from salcurate.nn.scorer import ScorerConfig  # noqa: E402


# ------------------------------------------------------------------------------------------
# Sizes: the paper's on a GPU, tiny in smoke mode
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sizes:
    image: tuple[int, int] = (375, 500)  # VOC-sized (height, width)
    store_samples: int = 2000
    scorer: dict[str, int] = dataclasses.field(default_factory=dict)  # ScorerConfig kwargs ({}: Table I, 256 px)
    scorer_batch: int = 64
    scorer_batches: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    scorer_repeats: int = 5
    matmul_n: int = 8192
    fine_batch: int = 64
    breakdown_samples: int = 256
    train_items: int = 10000
    train_batch: int = 8
    train_batches: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    backbones: tuple[str, ...] = ("vgg16", "resnet101")
    precisions: tuple[str, ...] = ("bf16", "fp32")
    salnet_batch: int = 7
    salnet_crop: int = 321
    salnet_iters: int = 20
    salnet_warmup: int = 5
    eval_backbone: str = "vgg16"
    eval_images: int = 50
    cam_backbone: str = "resnet50"  # IRN's CAM network
    cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)  # IRN's CAM scales (with flips)
    cam_images: int = 20
    model_iters: int = 50  # score-model's fold training, per fold (timed, then scaled by the cost model)
    workers: int = min(8, max(1, (os.cpu_count() or 2) - 2))  # data-loader processes
    compile: bool = True


SMOKE = Sizes(image=(40, 60), store_samples=40, scorer=dict(input_size=32, width=8, channels=12, hidden=6),
              scorer_batch=4, scorer_batches=(2, 4), scorer_repeats=1, matmul_n=256, fine_batch=8,
              breakdown_samples=8, train_items=48, train_batch=8, train_batches=(4, 8), backbones=("resnet18",),
              precisions=("bf16",), salnet_batch=1, salnet_crop=32, salnet_iters=1, salnet_warmup=1,
              eval_backbone="resnet18", eval_images=1, cam_backbone="resnet18", cam_scales=(1.0,), cam_images=2,
              model_iters=2, workers=0, compile=False)


class Skip(Exception):
    """A measurement or section that is not run; the message says why."""


# ------------------------------------------------------------------------------------------
# The run: budget, records
# ------------------------------------------------------------------------------------------
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _split(values: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Finite numbers go to figures, everything else (words, lists, NaN) to info."""
    figures: dict[str, float] = {}
    info: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, (bool, int, float, np.integer, np.floating)) and math.isfinite(float(v)):
            figures[k] = v if isinstance(v, (bool, int)) else round(float(v), 6)
        else:
            info[k] = v if isinstance(v, (str, list, dict, type(None))) else str(v)
    return figures, info


@dataclasses.dataclass
class Check:
    """One run of the check: where it writes, on which device, how much time is left."""

    out: Path
    work: Path
    device: torch.device
    sizes: Sizes
    smoke: bool
    budget_s: float
    started: float = dataclasses.field(default_factory=time.monotonic)
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "figures.jsonl"
        self.device_name = _device_name(self.device)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.monotonic() - self.started)

    def need(self, seconds: float) -> None:
        """Skip what follows unless ``seconds`` (a GPU estimate; nothing in smoke mode) are left."""
        if not self.smoke and self.left() < seconds:
            raise Skip(f"time budget: {self.left():.0f} s left, this needs about {seconds:.0f} s")

    def bf16(self) -> None:
        """Skip a bf16 measurement on a GPU without bf16."""
        from salcurate.training.harness import cuda_bf16_supported

        if self.cuda and not cuda_bf16_supported():
            raise Skip(f"{self.device_name} has no bf16 support")

    def write(self, name: str, section: str, status: str, values: dict[str, Any] | None = None, *,
              seconds: float = 0.0, error: str | None = None, skipped: str | None = None) -> dict[str, Any]:
        figures, info = _split(values or {})
        record = {"name": name, "section": section, "status": status, "figures": figures, "info": info,
                  "error": error, "skipped": skipped, "device": self.device_name, "torch": torch.__version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "seconds": round(seconds, 3)}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        shown = error or skipped or ", ".join(f"{k} {v:g}" for k, v in list(figures.items())[:6])
        print(f"[{time.monotonic() - self.started:6.1f} s] {name}: {status} {shown}"[:240], flush=True)
        return record

    def measure(self, name: str, section: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one measurement and write its line (ok, error or skipped); its values, or None."""
        t = time.monotonic()
        try:
            values = fn()
        except Skip as why:
            self.write(name, section, "skipped", seconds=time.monotonic() - t, skipped=str(why))
            return None
        except Exception as exc:  # a failed measurement is a line, not the end of the run
            self.write(name, section, "error", {"traceback": traceback.format_exc()[-3000:]},
                       seconds=time.monotonic() - t, error=_one_line(exc))
            return None
        self.write(name, section, "ok", values, seconds=time.monotonic() - t)
        return values


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: Process groups of the running subprocesses: killed at a timeout, and when this script is stopped.
_GROUPS: set[int] = set()


def _kill(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM (``timeout``) or Ctrl-C: no subprocess may outlive the script (it would hold the GPU)."""
    for pgid in list(_GROUPS):
        _kill(pgid)
    raise SystemExit(128 + signum)


def _run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A subprocess in its own process group (all of it is killed at the timeout): rc, stdout, stderr."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _GROUPS.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        _kill(proc.pid)
        out, err = proc.communicate()
        raise TimeoutError(f"{' '.join(cmd[:6])}... did not finish within {timeout:.0f} s") from None
    finally:
        _kill(proc.pid)  # what it left behind (data-loader workers)
        _GROUPS.discard(proc.pid)
    return proc.returncode, out, err


# ------------------------------------------------------------------------------------------
# A synthetic store of VOC-like samples
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Scene:
    jpeg: bytes
    gt: np.ndarray
    saliency: np.ndarray
    saliency_png: bytes
    tags: np.ndarray


def _scene(rng: np.random.Generator, h: int, w: int, num_classes: int) -> _Scene:
    """A textured background with 1-3 coloured elliptic objects, their labels and a saliency map."""
    from PIL import Image

    from salcurate.imageio import encode_grey_png

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = rng.uniform(60, 160, 3) + 25 * np.sin(xx[..., None] / rng.uniform(8, 30) + rng.uniform(0, 6, 3))
    gt = np.zeros((h, w), np.uint8)
    saliency = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        ry, rx = rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w
        d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        inside = d2 <= 1
        gt[inside] = rng.integers(1, num_classes + 1)
        image[inside] = rng.uniform(0, 255, 3)
        saliency = np.maximum(saliency, np.clip(1.5 - d2, 0, 1))
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    edge = np.zeros_like(gt, bool)  # VOC's ignore band on object borders
    edge[1:] |= gt[1:] != gt[:-1]
    edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
    gt[edge] = 255
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    grey = (255 * saliency).astype(np.uint8)
    present = np.unique(gt[(gt > 0) & (gt < 255)])
    tags = np.zeros(num_classes, bool)
    tags[present - 1] = True
    return _Scene(buf.getvalue(), gt, grey, encode_grey_png(grey), tags)


def _proxy(gt: np.ndarray, variant: int) -> np.ndarray:
    """A proxy of the ground truth, good or bad by ``variant`` (so the coarse scores spread)."""
    labels = np.where(gt == 255, 0, gt).astype(np.uint8)
    h, w = labels.shape
    if variant == 3:  # shifted
        return np.roll(labels, (h // 6, w // 6), axis=(0, 1))
    if variant == 5:  # mirrored: mostly in the wrong place
        return np.ascontiguousarray(labels[::-1, ::-1])
    if variant == 6:  # one object kept
        first = labels[labels > 0][:1]
        return np.where(np.isin(labels, first), labels, 0).astype(np.uint8)
    return labels


def synthetic_store(path: Path, n: int, size: tuple[int, int], *, distinct: int = 64, seed: int = 0) -> Path:
    """``n`` VOC-like samples (90 % train, 10 % val) with proxy, ground truth, saliency and tags,
    written through the store's own writer; ``distinct`` scenes are reused (their JPEGs are
    decoded anew each time, as real ones would be)."""
    from salcurate.data import store as store_mod
    from salcurate.imageio import VOC_CLASS_NAMES

    rng = np.random.default_rng(seed)
    h, w = size
    scenes = [_scene(rng, h, w, len(VOC_CLASS_NAMES) - 1) for _ in range(min(distinct, n))]
    with store_mod.create_store(path, VOC_CLASS_NAMES, command="gpu-check", config={"samples": n, "size": [h, w]},
                                overwrite=True) as writer:
        batch = []
        for i in range(n):
            s = scenes[i % len(scenes)]
            batch.append(store_mod.SampleRecord(
                id=f"{i:06d}", split="val" if i % 10 == 9 else "train", image_bytes=s.jpeg, image_format="JPEG",
                height=h, width=w, proxy=_proxy(s.gt, i % 8), gt=s.gt, saliency=s.saliency,
                saliency_png=s.saliency_png, tags=s.tags))
            if len(batch) == 256:
                writer.append_samples(batch)
                batch = []
        writer.append_samples(batch)
    return path


def big_store(ctx: Check) -> dict[str, Any]:
    """The section's shared store (made once): samples, then ``score-coarse`` (CPU)."""
    if "store" not in ctx.cache:
        from salcurate.scoring.coarse import CoarseConfig
        from salcurate.scoring.coarse import run as score_coarse

        path = ctx.work / "voc-sized.h5"
        t = time.monotonic()
        synthetic_store(path, ctx.sizes.store_samples, ctx.sizes.image)
        built = time.monotonic() - t
        t = time.monotonic()
        coarse = score_coarse(CoarseConfig(store=str(path), workers=0 if not ctx.smoke else 1))
        ctx.cache["store"] = {"path": path, "samples": ctx.sizes.store_samples, "build_s": built,
                              "coarse_s": time.monotonic() - t, "mean_sc": coarse.mean_sc,
                              "height": ctx.sizes.image[0], "width": ctx.sizes.image[1]}
    return ctx.cache["store"]


# ------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------
def environment(ctx: Check) -> dict[str, Any]:
    from salcurate._version import __version__
    from salcurate.training.harness import cuda_bf16_supported

    out: dict[str, Any] = {"device_name": ctx.device_name, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(), "python": sys.version.split()[0],
                           "platform": platform.platform(), "salcurate": __version__, "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
                           "nccl_available": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
                           "c_compiler": shutil.which("cc") or shutil.which("gcc") or "none (torch.compile needs one)",
                           "smoke": ctx.smoke, "budget_s": ctx.budget_s}
    with contextlib.suppress(ImportError):
        import triton

        out["triton"] = triton.__version__
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        out.update(gpu_memory_gib=props.total_memory / 2**30, compute_capability=float(f"{props.major}.{props.minor}"),
                   multiprocessors=props.multi_processor_count, bf16_supported=cuda_bf16_supported())
    return out


def matmul(ctx: Check) -> dict[str, Any]:
    n = ctx.sizes.matmul_n
    out: dict[str, Any] = {"n": n, "fp32_tflops": bench_scorer.matmul_rate(ctx.device, n, torch.float32)}
    with contextlib.suppress(Skip):
        ctx.bf16()
        out["bf16_tflops"] = bench_scorer.matmul_rate(ctx.device, n, torch.bfloat16)
    ctx.cache["matmul"] = out
    return out


def _pytest(ctx: Check, section: str, select: str, timeout: float) -> dict[str, Any]:
    """``pytest -m gpu tests/test_gpu.py -k SELECT`` in a subprocess; a line per test from its JUnit XML."""
    xml = ctx.out / f"{section}.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-k", select, "-q", "-p",
           "no:cacheprovider", f"--junitxml={xml}"]
    t = time.monotonic()
    rc, out, err = _run(cmd, timeout=timeout)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{section}/{case.get('name')}"
            seconds = float(case.get("time") or 0)
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            skip = case.find("skipped")
            if bad is not None:
                counts["failed"] += 1
                ctx.write(name, section, "error", {"details": (bad.text or "")[-3000:]}, seconds=seconds,
                          error=(bad.get("message") or "failed")[:500])
            elif skip is not None:
                counts["skipped"] += 1
                ctx.write(name, section, "skipped", seconds=seconds, skipped=skip.get("message") or "skipped")
            else:
                counts["passed"] += 1
                ctx.write(name, section, "ok", {"test_seconds": seconds}, seconds=seconds)
    if rc != 0 or counts["failed"]:
        raise RuntimeError(f"pytest exit {rc}, {counts['failed']} failed: {(out + err).strip()[-400:]}")
    return {**counts, "exit_code": rc, "wall_s": time.monotonic() - t}


def gpu_tests(ctx: Check) -> dict[str, Any]:
    ctx.need(60)
    return _pytest(ctx, "gpu_tests", "not torchrun", timeout=min(240.0, ctx.left() - 5) if not ctx.smoke else 120)


def torchrun_nccl(ctx: Check) -> dict[str, Any]:
    if not ctx.cuda:
        raise Skip("needs CUDA: NCCL is the GPU backend (tests/test_retrain.py runs torchrun with gloo on the CPU)")
    ctx.need(30)
    return _pytest(ctx, "torchrun_nccl", "torchrun", timeout=min(120.0, ctx.left() - 5))


def _scorer_forward(ctx: Check, *, compile: bool) -> dict[str, Any]:
    """Forward images/s of the scorer at the batch of ``sizes.scorer_batch`` and the best batch."""
    s = ctx.sizes
    cfg = ScorerConfig(**s.scorer)
    section = "scorer_compiled" if compile else "scorer_forward"
    mode = "compiled" if compile else "eager"
    matmul_bf16 = (ctx.cache.get("matmul") or {}).get("bf16_tflops")
    summary: dict[str, Any] = {"input_size": cfg.input_size}
    for precision in ("bf16", "fp32"):
        amp = precision == "bf16"
        batches = [s.scorer_batch] if compile else sorted(set(s.scorer_batches) | {s.scorer_batch})
        if compile and f"best_batch_{precision}" in ctx.cache:
            batches.append(ctx.cache[f"best_batch_{precision}"])
        best: tuple[float, int] = (0.0, 0)
        for batch in dict.fromkeys(batches):
            def one(batch: int = batch, amp: bool = amp) -> dict[str, Any]:
                if amp:
                    ctx.bf16()
                ctx.need(45 if compile else 5)
                r = bench_scorer.bench_config(cfg, ctx.device, batch, s.scorer_repeats, amp=amp, compile=compile,
                                              train=False)
                if matmul_bf16:
                    r["fraction_of_bf16_matmul"] = r["forward_tflops"] / matmul_bf16
                return {"batch": batch, **r}

            r = ctx.measure(f"{section}/{precision}/{mode}/b{batch}", section, one)
            if r is not None:
                if batch == s.scorer_batch:
                    summary[f"{precision}_images_per_s_b{batch}"] = r["forward_images_per_s"]
                    summary[f"{precision}_tflops_b{batch}"] = r["forward_tflops"]
                best = max(best, (r["forward_images_per_s"], batch))
        if best[1]:
            summary[f"{precision}_best_batch"], summary[f"{precision}_best_images_per_s"] = best[1], best[0]
            if not compile:
                ctx.cache[f"best_batch_{precision}"] = best[1]
    return summary


def scorer_forward(ctx: Check) -> dict[str, Any]:
    return _scorer_forward(ctx, compile=False)


def scorer_compiled(ctx: Check) -> dict[str, Any]:
    if not ctx.sizes.compile:
        raise Skip("smoke: torch.compile takes minutes on the CPU")
    ctx.need(60)
    return _scorer_forward(ctx, compile=True)


def _salnet(ctx: Check, *, compile: bool) -> dict[str, Any]:
    s = ctx.sizes
    section = "salnet_compiled" if compile else "salnet_train"
    summary: dict[str, Any] = {"batch": s.salnet_batch, "crop": s.salnet_crop}
    for precision in s.precisions:  # bf16 first: what retrain uses on a GPU
        for backbone in s.backbones:
            spec = dict(task="train", device=ctx.device.type, backbone=backbone, precision=precision, compile=compile,
                        batch=s.salnet_batch, crop=s.salnet_crop, classes=20, iters=s.salnet_iters,
                        warmup=s.salnet_warmup)

            def one(spec: dict[str, Any] = spec) -> dict[str, Any]:
                if spec["precision"] == "bf16":
                    ctx.bf16()
                ctx.need(120 if compile else 15)
                cap = 300.0 if compile else 180.0
                r = bench_retrain.run_spec(spec, timeout=None if ctx.smoke else max(10.0, min(cap, ctx.left() - 5)))
                if "error" in r:
                    raise RuntimeError(r["error"])
                r.pop("ms_per_iter_all", None)
                return r

            mode = "compiled" if compile else "eager"
            r = ctx.measure(f"{section}/{backbone}/{precision}/{mode}", section, one)
            if r is not None:
                summary[f"{backbone}_{precision}_ms_per_iter"] = r["ms_per_iter"]
                if "peak_gpu_mib" in r:
                    summary[f"{backbone}_{precision}_peak_gpu_mib"] = r["peak_gpu_mib"]
    return summary


def salnet_train(ctx: Check) -> dict[str, Any]:
    return _salnet(ctx, compile=False)


def salnet_compiled(ctx: Check) -> dict[str, Any]:
    if not ctx.sizes.compile:
        raise Skip("smoke: torch.compile takes minutes on the CPU")
    ctx.need(120)
    return _salnet(ctx, compile=True)


def _paper_scorer(ctx: Check) -> Path:
    """A scorer checkpoint of the measured size (random weights: speed does not depend on them)."""
    if "scorer" not in ctx.cache:
        from salcurate.nn.scorer import MaskScorer, save_checkpoint

        cfg = ScorerConfig(**ctx.sizes.scorer)
        torch.manual_seed(0)
        ctx.cache["scorer"] = save_checkpoint(ctx.work / "scorer-random.pt", MaskScorer(cfg), cfg, metrics={})
    return ctx.cache["scorer"]


def _fine_breakdown(ctx: Check, store: Path, scorer: Path) -> dict[str, Any]:
    """Where score-fine's time goes, per image, on one core and the device: store, decode, resize, model."""
    from salcurate.data.store import MaskStore
    from salcurate.imageio import decode_image
    from salcurate.nn.scorer import load_checkpoint
    from salcurate.scoring.metrics import foreground
    from salcurate.scoring.synthesis import network_input, resize_pair

    model, cfg, _ = load_checkpoint(scorer)
    times = {"store": 0.0, "decode": 0.0, "resize": 0.0, "model": 0.0}
    inputs = []
    with MaskStore(store) as st:
        n = min(ctx.sizes.breakdown_samples, len(st))
        for i in range(n):
            t0 = time.perf_counter()
            data, proxy = st.image_bytes(i), st.map("proxy", i)
            t1 = time.perf_counter()
            image = decode_image(data)
            t2 = time.perf_counter()
            b, _ = foreground(proxy)
            img, (m,) = resize_pair(image, [b], cfg.input_size)
            inputs.append(network_input(img, m))
            t3 = time.perf_counter()
            times["store"] += t1 - t0
            times["decode"] += t2 - t1
            times["resize"] += t3 - t2
    amp = ctx.cuda  # as score-fine: bf16 autocast and channels-last on CUDA
    model.to(ctx.device).eval()
    if amp:
        model.to(memory_format=torch.channels_last)
    batches = [np.stack(inputs[k:k + ctx.sizes.fine_batch]) for k in range(0, n, ctx.sizes.fine_batch)]
    with torch.no_grad(), torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
        model.predict(torch.from_numpy(batches[0]).to(ctx.device)).cpu()  # warm-up (cuDNN's choice of kernels)
        _sync(ctx.device)
        t = time.perf_counter()
        for x in batches:
            x = torch.from_numpy(x).to(ctx.device, non_blocking=True)
            if amp:
                x = x.contiguous(memory_format=torch.channels_last)
            model.predict(x).float().cpu()
        _sync(ctx.device)
        times["model"] = time.perf_counter() - t
    total = sum(times.values())
    out: dict[str, Any] = {"samples": n}
    for k, v in times.items():
        out[f"{k}_ms_per_image"] = 1000 * v / n
        out[f"{k}_share"] = v / total
    return out


def score_fine(ctx: Check) -> dict[str, Any]:
    from salcurate.scoring.fine import ScoreFineConfig
    from salcurate.scoring.fine import run as run_fine

    ctx.need(40)
    store = ctx.measure("score_fine/store", "score_fine", lambda: dict(big_store(ctx)))
    if store is None:
        raise RuntimeError("no store to score (see the score_fine/store line)")
    scorer = _paper_scorer(ctx)

    def end_to_end() -> dict[str, Any]:
        cfg = ScoreFineConfig(store=str(store["path"]), scorer=str(scorer), batch_size=ctx.sizes.fine_batch,
                              device=ctx.device.type, workers=ctx.sizes.workers, overwrite=True)
        res = run_fine(cfg)
        return {"images": res.computed, "seconds_total": res.seconds, "images_per_s": res.computed / res.seconds,
                "batch_size": cfg.batch_size, "workers": cfg.workers, "height": store["height"],
                "width": store["width"]}

    e2e = ctx.measure("score_fine/end_to_end", "score_fine", end_to_end)
    parts = ctx.measure("score_fine/breakdown", "score_fine", lambda: _fine_breakdown(ctx, store["path"], scorer))
    if e2e is None or parts is None:
        raise RuntimeError("a part of score_fine failed (see its lines)")
    return {"images_per_s": e2e["images_per_s"], "images": e2e["images"],
            **{k: v for k, v in parts.items() if k.endswith("_share")}}


class _EpochTimer(Events):
    """Events of train-scorer: when training started, when the last batch ended, the epoch's metrics."""

    def __init__(self) -> None:
        self.start_t = self.last_t = 0.0
        self.batches = 0
        self.epochs: list[dict[str, Any]] = []

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.start_t = self.last_t = time.perf_counter()

    def advance(self, n: int = 1, **info: Any) -> None:
        self.batches += n
        self.last_t = time.perf_counter()

    def metrics(self, record: dict[str, Any]) -> None:
        self.epochs.append(record)


def _synthesis_scale(path: Path, items: int) -> float:
    """The ``scale`` of the scorer's training set that makes at least ``items`` training items of
    the store's coarse scores (positives and negatives are drawn without replacement, so the
    paper's proportions alone give fewer)."""
    from salcurate.data.store import MaskStore
    from salcurate.scoring.synthesis import (
        PAPER_COUNTS,
        PAPER_IMAGES,
        SynthesisConfig,
        plan_training_set,
        split_train_val,
    )

    with MaskStore(path) as st:
        ac, n = st.score("ac"), len(st)
    scale = items * PAPER_IMAGES / (sum(PAPER_COUNTS.values()) * max(1, int((~np.isnan(ac)).sum())))
    for _ in range(8):
        cfg = SynthesisConfig(scale=scale)
        train, _ = split_train_val(plan_training_set(ac, cfg), n, cfg.val_fraction, cfg.seed)
        if len(train) >= items:
            break
        scale *= 1.02 * items / max(len(train), 1)
    return scale


def _train_epoch(ctx: Check, store: dict[str, Any], batch: int) -> dict[str, Any]:
    from salcurate.scoring.synthesis import SynthesisConfig
    from salcurate.training.scorer import TrainScorerConfig
    from salcurate.training.scorer import run as train_scorer

    if "scale" not in ctx.cache:
        ctx.cache["scale"] = _synthesis_scale(store["path"], ctx.sizes.train_items)
    scale = ctx.cache["scale"]
    out = ctx.work / f"train-scorer-b{batch}"
    out.mkdir(exist_ok=True)
    cfg = TrainScorerConfig(store=str(store["path"]), output=str(out / "scorer.pt"), epochs=1, batch_size=batch,
                            synthesis=SynthesisConfig(scale=scale), device=ctx.device.type, workers=ctx.sizes.workers,
                            **ctx.sizes.scorer)
    timer = _EpochTimer()
    res = train_scorer(cfg, events=timer)
    train_s = timer.last_t - timer.start_t
    samples = timer.batches * batch
    return {"batch": batch, "train_items": res.items["train"], "val_items": res.items["val"],
            "samples_trained": samples, "train_s": train_s, "epoch_s": timer.epochs[-1]["seconds"],
            "seconds_per_10k_samples": train_s * 10000 / max(samples, 1), "samples_per_s": samples / train_s,
            "run_s": res.seconds, "workers": cfg.workers, "synthesis_scale": scale}


def train_scorer(ctx: Check) -> dict[str, Any]:
    s = ctx.sizes
    ctx.need(60)
    store = big_store(ctx)
    summary: dict[str, Any] = {}
    first = ctx.measure(f"train_scorer/epoch/b{s.train_batch}", "train_scorer",
                        lambda: _train_epoch(ctx, store, s.train_batch))
    if first is not None:
        summary[f"seconds_per_10k_b{s.train_batch}"] = first["seconds_per_10k_samples"]
    cfg = ScorerConfig(**s.scorer)
    best: tuple[float, int] = (math.inf, 0)
    for batch in s.train_batches:
        def step(batch: int = batch) -> dict[str, Any]:
            ctx.need(10)
            r = bench_scorer.bench_config(cfg, ctx.device, batch, s.scorer_repeats)
            return {"batch": batch, "ms_per_sample": 1000 / (r["train_iters_per_s"] * batch), **r}

        r = ctx.measure(f"train_scorer/step/b{batch}", "train_scorer", step)
        if r is not None:
            best = min(best, (r["ms_per_sample"], batch))
    if best[1]:
        summary["fastest_batch"], summary["fastest_step_ms_per_sample"] = best[1], best[0]

        def fastest() -> dict[str, Any]:
            if best[1] == s.train_batch:
                raise Skip(f"the fastest batch is {s.train_batch}, measured above")
            ctx.need(60)
            return _train_epoch(ctx, store, best[1])

        r = ctx.measure(f"train_scorer/epoch_fastest/b{best[1]}", "train_scorer", fastest)
        if r is not None:
            summary[f"seconds_per_10k_b{best[1]}"] = r["seconds_per_10k_samples"]
    if first is None:
        raise RuntimeError(f"the epoch at batch {s.train_batch} failed (see its line)")
    return summary


def evaluate(ctx: Check) -> dict[str, Any]:
    from salcurate.evaluation.evaluate import EvaluateConfig
    from salcurate.evaluation.evaluate import run as run_evaluate
    from salcurate.evaluation.inference import InferenceConfig
    from salcurate.imageio import VOC_CLASS_NAMES
    from salcurate.nn.salnet import SALNet, SALNetConfig, save_model

    ctx.need(30)
    store = big_store(ctx)
    torch.manual_seed(0)
    model = SALNet(SALNetConfig(backbone=ctx.sizes.eval_backbone, num_classes=len(VOC_CLASS_NAMES) - 1))
    path = save_model(ctx.work / f"salnet-{ctx.sizes.eval_backbone}.pt", model, class_names=VOC_CLASS_NAMES)
    cfg = EvaluateConfig(store=str(store["path"]), model=str(path), split="val", multiscale=True,
                         inference=InferenceConfig(flip=True), device=ctx.device.type, limit=ctx.sizes.eval_images)
    res = run_evaluate(cfg)
    out: dict[str, Any] = {"backbone": ctx.sizes.eval_backbone, "images": res.num_images, "height": store["height"],
                           "width": store["width"], "seconds_total": res.seconds}
    for setting in res.settings:
        key = setting.name.replace(" + ", "_").replace("-", "_").replace(" ", "_")
        out[f"{key}_images_per_s"] = 1.0 / setting.seconds_per_image
        out[f"{key}_s_per_image"] = setting.seconds_per_image
    return out


def cam_proxies(ctx: Check) -> dict[str, Any]:
    """``pseudo-label``'s proxy phase (issue 11's goal: 10,582 VOC images in under 5 minutes after
    training): IRN's CAMs (4 scales + flips) of a ResNet-50 tag classifier (random weights: the
    cost does not depend on them) on VOC-sized images with 2 of 20 classes tagged, PAMR, argmax."""
    from salcurate.nn.classifier import TagClassifier, TagClassifierConfig
    from salcurate.training.harness import Precision
    from salcurate.training.pseudo_label import cam_proxy

    ctx.need(30)
    torch.manual_seed(0)
    precision = Precision(ctx.device)
    model = TagClassifier(TagClassifierConfig(backbone=ctx.sizes.cam_backbone, num_classes=20)).to(ctx.device).eval()
    rng = np.random.default_rng(0)
    h, w = ctx.sizes.image
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(ctx.sizes.cam_images + 1)]
    tags = np.zeros(20, bool)
    tags[[4, 14]] = True
    with torch.no_grad():
        cam_proxy(model, images[0], tags, scales=ctx.sizes.cam_scales, precision=precision)  # warm-up
        _sync(ctx.device)
        t = time.perf_counter()
        for image in images[1:]:
            cam_proxy(model, image, tags, scales=ctx.sizes.cam_scales, precision=precision)
        _sync(ctx.device)
        seconds = (time.perf_counter() - t) / ctx.sizes.cam_images
    return {"backbone": ctx.sizes.cam_backbone, "scales": list(ctx.sizes.cam_scales), "flip": True, "refine": "pamr",
            "height": h, "width": w, "images": ctx.sizes.cam_images, "s_per_image": seconds,
            "images_per_s": 1.0 / seconds, "voc_10582_minutes": 10582 * seconds / 60.0}


def score_model(ctx: Check) -> dict[str, Any]:
    """``score-model`` (issue 12's goal: K = 2 folds on 10,582 VOC images within 30 minutes on one
    GPU) end to end on a copy of the VOC-sized store: two fold models (the CAM backbone, random
    weights: the cost does not depend on them; scale 1, 321 px crops, batch 8) and their judgement of
    every image; then the cost model K x I x t_iteration + N x t_image for VOC at I = 300 (the
    default) and 3,000 iterations per fold."""
    from salcurate.data.store import copy_store
    from salcurate.training.folds import ScoreModelConfig
    from salcurate.training.folds import run as run_score_model

    ctx.need(60)
    store = big_store(ctx)
    path = ctx.work / "score-model.h5"
    copy_store(store["path"], path)
    iters, folds = ctx.sizes.model_iters, 2
    res = run_score_model(ScoreModelConfig(
        store=str(path), output=str(ctx.work / "score-model-runs"), folds=folds, backbone=ctx.sizes.cam_backbone,
        backbone_weights="none", scale=1.0, crop=ctx.sizes.salnet_crop, batch_size=8, iterations=iters,
        device=ctx.device.type, workers=ctx.sizes.workers, checkpoint_every=10**6))
    images = sum(res.fold_sizes)
    t_iter = res.train_seconds / (folds * iters)
    t_image = res.predict_seconds / images
    return {"backbone": ctx.sizes.cam_backbone, "iterations_per_fold": iters, "folds": folds, "images": images,
            "crop": ctx.sizes.salnet_crop, "seconds_total": res.seconds, "train_s_per_iteration": t_iter,
            "predict_images_per_s": 1.0 / t_image,
            "voc_10582_minutes_300_iterations": (folds * 300 * t_iter + 10582 * t_image) / 60,
            "voc_10582_minutes_3000_iterations": (folds * 3000 * t_iter + 10582 * t_image) / 60}


#: (name, function), most important first.
SECTIONS: tuple[tuple[str, Callable[[Check], dict[str, Any]]], ...] = (
    ("environment", environment),
    ("matmul", matmul),
    ("gpu_tests", gpu_tests),
    ("torchrun_nccl", torchrun_nccl),
    ("scorer_forward", scorer_forward),
    ("salnet_train", salnet_train),
    ("score_fine", score_fine),
    ("train_scorer", train_scorer),
    ("evaluate", evaluate),
    ("cam_proxies", cam_proxies),
    ("score_model", score_model),
    ("scorer_compiled", scorer_compiled),
    ("salnet_compiled", salnet_compiled),
)
SECTION_NAMES: tuple[str, ...] = tuple(name for name, _ in SECTIONS)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for figures.jsonl (appended to)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and counts: every section in seconds")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting work after this many seconds (default 420, smoke 300)")
    ap.add_argument("--only", default="", help=f"comma-separated sections to run ({', '.join(SECTION_NAMES)})")
    ap.add_argument("--work", type=Path, default=None, help="folder for the stores and models (default: a temporary "
                                                             "folder, removed at the end)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from salcurate.nn.device import resolve_device

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTION_NAMES))
    try:
        if unknown:
            raise InputError(f"only: unknown sections {', '.join(unknown)}; choose from {', '.join(SECTION_NAMES)}",
                             param="only")
        if args.budget_s is not None and not args.budget_s > 0:
            raise InputError(f"budget_s must be a positive number of seconds, got {args.budget_s}", param="budget_s")
        device = resolve_device(args.device)
    except InputError as exc:  # one line, the options named as flags, exit 2: as the salcurate CLI
        from salcurate.cli.core import flag_message

        flags = {"device": "--device", "only": "--only", "budget_s": "--budget-s"}
        print(f"error: {flag_message(exc, flags)}", file=sys.stderr)
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        _run_sections(args, device, only)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _run_sections(args: argparse.Namespace, device: torch.device, only: list[str]) -> None:
    with _work_folder(args.work) as work, _threads(1 if args.smoke else None):
        ctx = Check(out=args.out, work=work, device=device, sizes=SMOKE if args.smoke else Sizes(), smoke=args.smoke,
                    budget_s=args.budget_s or (300.0 if args.smoke else 420.0))
        for name, fn in SECTIONS:
            if only and name not in only:
                continue
            t = time.monotonic()
            try:
                if not ctx.smoke and ctx.left() < 10:
                    raise Skip(f"time budget: {ctx.left():.0f} s left")
                values = fn(ctx)
            except Skip as why:
                ctx.write(name, name, "skipped", seconds=time.monotonic() - t, skipped=str(why))
            except Exception as exc:
                ctx.write(name, name, "error", {"traceback": traceback.format_exc()[-3000:]},
                          seconds=time.monotonic() - t, error=_one_line(exc))
            else:
                ctx.write(name, name, "ok", values, seconds=time.monotonic() - t)
    print(f"figures: {ctx.path}", flush=True)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """``n`` torch threads here and in child processes (smoke mode: tiny tensors gain nothing from
    threads, and on a busy machine they lose much); restored afterwards."""
    if n is None:
        yield
        return
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


@contextlib.contextmanager
def _work_folder(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
