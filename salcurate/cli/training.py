"""CLI commands of the training stage: train-scorer, retrain."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from salcurate.cli.core import LazyBar, _RateColumn, app, command, err, import_app, out, progress_bar  # noqa: F401

DEFAULT_STORE = Path("masks.h5")
StoreArg = Annotated[Path, typer.Argument(help="The mask store (default: masks.h5 in the current folder).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decoding threads (0 = all cores).", min=0)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------
# fine scoring
# --------------------------------------------------------------------------------------
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]


@app.command("train-scorer")
@command
def train_scorer(
    store: StoreArg = DEFAULT_STORE,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (a JSONL log goes beside it).")] = Path("models/scorer.pt"),
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs (paper: 50).")] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size (paper: 8).")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (paper: 1e-5).")] = 1e-5,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam or sgd.")] = "adam",
    input_size: Annotated[int, typer.Option("--input-size", help="Network input side in pixels (paper: 256).")] = 256,
    width: Annotated[int, typer.Option("--width", help="Channels of the first conv (Table I: 128).")] = 128,
    channels: Annotated[int, typer.Option("--channels", help="Channels of the later layers (Table I: 192).")] = 192,
    hidden: Annotated[int, typer.Option("--hidden", help="Units of the first fc layer (Table I: 128).")] = 128,
    scale: Annotated[float, typer.Option("--scale", help="Training-set size relative to the paper's 10k per 10,582 images.")] = 1.0,
    proportions: Annotated[str, typer.Option("--proportions", help="Items per 10,582 images: positive,negative,degraded,composite.")] = "4000,1000,3000,2000",
    positive_min: Annotated[float, typer.Option("--positive-min", help="Positives: AC >= this.")] = 0.8,
    negative_max: Annotated[float, typer.Option("--negative-max", help="Negatives: AC <= this.")] = 0.3,
    composite_source_min: Annotated[float, typer.Option("--composite-source-min", help="Pasted objects come from AC >= this.")] = 0.9,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Images held out for validation.")] = 0.1,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Makes CPU runs repeatable.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader processes.", min=0)] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint at --output.")] = False,
) -> None:
    """Train the fine scorer (Table I) on synthesized samples (L2, Eq. 6)."""
    from salcurate.errors import InputError
    from salcurate.scoring.synthesis import SynthesisConfig
    from salcurate.training.scorer import TrainScorerConfig
    from salcurate.training.scorer import train_scorer as run

    try:
        mix = tuple(int(v) for v in proportions.split(","))
    except ValueError:
        raise InputError(f"--proportions expects 4 whole numbers like 4000,1000,3000,2000, got {proportions!r}") from None

    config = TrainScorerConfig(
        output=str(output), epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, input_size=input_size,
        width=width, channels=channels, hidden=hidden, device=device, seed=seed, workers=workers, resume=resume,
        synthesis=SynthesisConfig(positive_min=positive_min, negative_max=negative_max,
                                  composite_source_min=composite_source_min, scale=scale, val_fraction=val_fraction, seed=seed,
                                  proportions=mix))  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        bar = LazyBar(stack, "training")

        def on_start(total_epochs: int, start: int, batches: int) -> None:
            bar.start((total_epochs - start) * batches)
            if start:
                out.print(f"resuming after epoch {start}")

        def on_epoch(m: Any) -> None:
            rho = "-" if m.val_spearman is None else f"{m.val_spearman:.3f}"
            out.print(f"epoch {m.epoch}: train L2 {m.train_l2:.4f}, val L2 {m.val_l2:.4f}, val Spearman {rho} ({m.seconds:.1f} s)")

        res = run(store, config, on_start=on_start, on_epoch=on_epoch, progress=bar.advance)
    out.print(f"scorer saved to {escape(res['output'])} ({res['items']['train']} training / {res['items']['val']} "
              f"validation items); log {escape(res['log'])}")


# --------------------------------------------------------------------------------------
# retrain
# --------------------------------------------------------------------------------------
@app.command("retrain")
@command
def retrain(
    store: StoreArg = DEFAULT_STORE,
    selection: Annotated[Optional[str], typer.Option("--selection", help="Selection to train on (from `salcurate select`); none = every proxy (P2).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder (default runs/SELECTION).")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="vgg16, resnet101, resnet50 or resnet18.")] = "vgg16",
    backbone_weights: Annotated[str, typer.Option("--backbone-weights", help="imagenet (from the local torch cache), a .pth file, or none (random).")] = "imagenet",
    sample: Annotated[str, typer.Option("--sample", help="selected: draw only kept images (paper); all: every image, L_sel weighted by w.")] = "selected",
    split: Annotated[str, typer.Option("--split", help="Split to train on.")] = "train",
    val_split: Annotated[str, typer.Option("--val-split", help="Split with ground truth for validation mIoU.")] = "val",
    strong: Annotated[bool, typer.Option("--strong/--no-strong", help="Strong samples train on their ground truth with w = 1.")] = True,
    attention: Annotated[str, typer.Option("--attention", help="multiply (Eq. 11, paper), multitask (released code) or off (no classification branch).")] = "multiply",
    attention_loss: Annotated[str, typer.Option("--attention-loss", help="bce (positive and negative terms) or positive (Eq. 12 as printed).")] = "bce",
    lam: Annotated[float, typer.Option("--lambda", help="Weight of the attention loss (Eq. 14; paper 2).")] = 2.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per iteration and process (paper 7).")] = 7,
    crop: Annotated[int, typer.Option("--crop", help="Random crop side (paper 321); smaller images are padded.")] = 321,
    scale_min: Annotated[float, typer.Option("--scale-min", help="Smallest random scale.")] = 0.5,
    scale_max: Annotated[float, typer.Option("--scale-max", help="Largest random scale.")] = 1.5,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips.")] = True,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate (default: 1e-3 vgg16, 1e-4 resnets).")] = None,
    max_iter: Annotated[Optional[int], typer.Option("--max-iter", help="Iterations (default: 27000 vgg16, 15000 resnets).")] = None,
    momentum: Annotated[float, typer.Option("--momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 5e-4,
    power: Annotated[float, typer.Option("--power", help="Poly schedule power.")] = 0.9,
    head_lr_mult: Annotated[float, typer.Option("--head-lr-mult", help="Heads learn this many times faster than the backbone.")] = 10.0,
    freeze_bn: Annotated[Optional[bool], typer.Option("--freeze-bn/--train-bn", help="Batch-norm fixed (default: when ImageNet weights are loaded).")] = None,
    device: DeviceOpt = "auto",
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast (default: on CUDA).")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (default: on CUDA).")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader processes per rank.", min=0)] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Iterations between checkpoints (a killed run loses at most this many).")] = 1000,
    val_every: Annotated[int, typer.Option("--val-every", help="Iterations between validations (0: at the end only).")] = 0,
    val_limit: Annotated[Optional[int], typer.Option("--val-limit", help="Validate on at most this many images.")] = None,
    log_every: Annotated[int, typer.Option("--log-every", help="Iterations per line of log.jsonl.")] = 20,
    tensorboard: Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Also write TensorBoard events when installed.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the output folder.")] = False,
) -> None:
    """Retrain SAL-Net on selected proxies with the selection and attention losses (Eq. 13-14)."""
    from salcurate.data.store import MaskStore
    from salcurate.errors import InputError
    from salcurate.training.distributed import env_info
    from salcurate.training.retrain import RetrainConfig
    from salcurate.training.retrain import retrain as run

    if selection is None:
        with MaskStore(store) as st:
            have = ", ".join(st.selection_names()) or "none yet"
        raise InputError(f"pass --selection NAME (the store has: {have}; make one with `salcurate select`) "
                         "or --selection none to train on every proxy")
    sel = None if selection.lower() == "none" else selection
    config = RetrainConfig(
        store=str(store), output=str(output or Path("runs") / (sel or "all")), backbone=backbone,
        backbone_weights=backbone_weights, selection=sel, sample=sample, split=split, val_split=val_split,
        use_strong=strong, attention=attention, attention_loss=attention_loss, lam=lam, batch_size=batch_size, crop=crop,
        scale_min=scale_min, scale_max=scale_max, flip=flip, lr=lr, max_iter=max_iter, momentum=momentum,
        weight_decay=weight_decay, power=power, head_lr_mult=head_lr_mult, freeze_bn=freeze_bn, device=device, amp=amp,
        channels_last=channels_last, compile=compile_, workers=workers, seed=seed, checkpoint_every=checkpoint_every,
        val_every=val_every, val_limit=val_limit, log_every=log_every, tensorboard=tensorboard, resume=resume)
    main_rank = env_info().main
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=err, disable=not (err.is_terminal and main_rank)) as bar:
        task = None

        def on_start(s: dict[str, Any]) -> None:
            nonlocal task
            c = s["counts"]
            out.print(f"training on {c['drawable']} images of {c['split']} in split {split!r} ({c['kept']} kept, "
                      f"{c['strong']} strong), validating on {s['validation_images']}; {s['device']}, "
                      f"{s['world_size']} process(es)" + (f"; resuming at iteration {s['start']}" if s["start"] else ""))
            task = bar.add_task("retraining", total=s["max_iter"], completed=s["start"], info="")

        def on_progress(p: Any) -> None:
            m = p.logged
            info = (f"loss {m['loss']:.3f} (sel {m['loss_sel']:.3f}, atten {m['loss_atten']:.3f}) lr {p.lr:.2e}"
                    if m.get("loss") is not None else f"lr {p.lr:.2e}")
            if task is not None:
                bar.update(task, completed=p.iteration, info=info)

        def on_validation(it: int, m: dict[str, Any]) -> None:
            out.print(f"iteration {it}: validation mIoU {100 * m['val_miou']:.1f}, pixel accuracy "
                      f"{100 * m['val_pixel_accuracy']:.1f}")

        res = run(config, on_start=on_start, progress=on_progress, on_validation=on_validation)
    if main_rank:
        out.print(f"model saved to {escape(res.model)} after {res.iterations} iterations ({res.seconds:.0f} s); "
                  f"checkpoint {escape(res.checkpoint)}, log {escape(res.log)}")


