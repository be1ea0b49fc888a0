"""Cost model of ``score-model`` on PASCAL VOC (issue 12's GPU goal), without a GPU.

The goal: K = 2 fold models on the 10,582 VOC training images within 30 minutes on one GPU,
"measured where a GPU is lent; the cost model otherwise".  ``benchmarks/gpu_check.py --only
score_model`` measures it on a GPU.  This script is the cost model for when none is lent:

    time = K x I x t_iteration + N x t_image

(each fold model trains I iterations, and each image is predicted once, by the model that did not
see it).  t_iteration and t_image are not measured on a GPU here; they are *scaled* from the
paper's own measured times (SAL paper, Table XI and Sec. IV-F: SAL-Net-ResNet101 on a GTX 1080 Ti,
TensorFlow: 15,000 iterations of batch 7 at 321 x 321 in about 3.8 h, and 0.15 s to segment one
500 x 375 image) by the ratio of floating-point operations, counted with
``torch.utils.flop_counter`` on the meta device (no arithmetic is done):

    t_iteration = 0.912 s x FLOPs(our training iteration) / FLOPs(the paper's iteration)
    t_image     = 0.15 s  x FLOPs(our prediction)         / FLOPs(the paper's prediction)

The paper's iteration is SAL-Net-ResNet101 with its attention branch, forward and backward, on
7 crops of 321 px; its prediction one forward pass on a 500 x 375 image.  Ours are what
``score-model``'s defaults do on VOC: SAL-Net with the tag classifier's backbone (IRN's ResNet-50
for VOC; ``--backbone`` to change), attention off, 8 crops of 321 px (the classifier's scale,
about 1 on VOC, and the crop capped at 321), and one forward pass per image at scale 1 without
flipping.  A modern GPU is faster than a GTX 1080 Ti; the script prints the 1080 Ti figure and
the figure at a stated speed-up (``--speedup``, default 5: a conservative figure for an H100/H200
in bf16 against the 1080 Ti in fp32, whose dense matrix rates differ by about 90x).  Data loading
is not modelled: 10,582 JPEG decodes take about 50 s on 2 cores of this machine
(docs/benchmarks.md, the import).

Run: ``.venv/bin/python benchmarks/score_model_cost.py [--backbone resnet50] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salcurate.nn.salnet import SALNet, SALNetConfig  # noqa: E402

#: The paper's measured times (GTX 1080 Ti, TensorFlow), SAL-Net-ResNet101.
PAPER_ITERATION_S = 3.8 * 3600 / 15000
PAPER_IMAGE_S = 0.15
PAPER = {"backbone": "resnet101", "attention": "multiply", "batch": 7, "crop": 321, "image": (375, 500)}


def _flops(model: torch.nn.Module, x: torch.Tensor, *, backward: bool) -> int:
    """FLOPs of one forward (and backward) pass of ``model`` on ``x``, counted on the meta device."""
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if backward:
            out.attended.float().sum().backward()
    return int(counter.get_total_flops())


def count(backbone: str, *, attention: str, batch: int, crop: int, image: tuple[int, int],
          num_classes: int = 20) -> dict[str, int]:
    """FLOPs of one training iteration (batch x crop x crop, forward + backward) and of one
    prediction (one image of ``image`` = (height, width), forward) of a SAL-Net."""
    with torch.device("meta"):
        model = SALNet(SALNetConfig(backbone=backbone, num_classes=num_classes, attention=attention))
    model.train()
    train = _flops(model, torch.empty(batch, 3, crop, crop, device="meta"), backward=True)
    model.eval()
    with torch.no_grad():
        predict = _flops(model, torch.empty(1, 3, *image, device="meta"), backward=False)
    return {"train_flops_per_iteration": train, "predict_flops_per_image": predict}


def estimate(*, backbone: str = "resnet50", folds: int = 2, iterations: tuple[int, ...] = (300, 3000),
             images: int = 10582, batch: int = 8, crop: int = 321, image: tuple[int, int] = (375, 500),
             speedup: float = 5.0) -> dict[str, Any]:
    """The cost model (module docstring) as a dict of figures."""
    ours = count(backbone, attention="off", batch=batch, crop=crop, image=image)
    paper = count(PAPER["backbone"], attention=PAPER["attention"], batch=PAPER["batch"], crop=PAPER["crop"],
                  image=PAPER["image"])
    t_iter = PAPER_ITERATION_S * ours["train_flops_per_iteration"] / paper["train_flops_per_iteration"]
    t_image = PAPER_IMAGE_S * ours["predict_flops_per_image"] / paper["predict_flops_per_image"]
    out: dict[str, Any] = {
        "backbone": backbone, "folds": folds, "images": images, "batch": batch, "crop": crop, "image": list(image),
        "ours": ours, "paper": {**paper, "iteration_s": PAPER_ITERATION_S, "image_s": PAPER_IMAGE_S},
        "gtx1080ti_s_per_iteration": t_iter, "gtx1080ti_s_per_image": t_image, "speedup": speedup,
    }
    for it in iterations:
        minutes = (folds * it * t_iter + images * t_image) / 60.0
        out[f"gtx1080ti_minutes_{it}_iterations"] = minutes
        out[f"modern_gpu_minutes_{it}_iterations"] = minutes / speedup
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet50", choices=("resnet18", "resnet50", "resnet101", "vgg16"))
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--iterations", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--images", type=int, default=10582)
    ap.add_argument("--crop", type=int, default=321)
    ap.add_argument("--speedup", type=float, default=5.0, help="a modern GPU's speed over the paper's GTX 1080 Ti")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    res = estimate(backbone=args.backbone, folds=args.folds, iterations=tuple(args.iterations), images=args.images,
                   crop=args.crop, speedup=args.speedup)
    o, p = res["ours"], res["paper"]
    g = 1e9
    print(f"FLOPs per training iteration: ours {o['train_flops_per_iteration'] / g:.0f} G, paper "
          f"{p['train_flops_per_iteration'] / g:.0f} G; per prediction: ours {o['predict_flops_per_image'] / g:.0f} G, "
          f"paper {p['predict_flops_per_image'] / g:.0f} G")
    print(f"scaled from the paper's GTX 1080 Ti: {res['gtx1080ti_s_per_iteration']:.3f} s per iteration, "
          f"{res['gtx1080ti_s_per_image']:.3f} s per image")
    for it in args.iterations:
        print(f"K = {args.folds}, {it} iterations per fold, {args.images} images: "
              f"{res[f'gtx1080ti_minutes_{it}_iterations']:.1f} min on a GTX 1080 Ti, "
              f"{res[f'modern_gpu_minutes_{it}_iterations']:.1f} min at {args.speedup:g}x")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
