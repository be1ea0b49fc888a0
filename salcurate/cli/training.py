"""CLI commands of the training stage: train-scorer, retrain, pseudo-label, score-model.

Each takes every setting of its config (``TrainScorerConfig``, ``RetrainConfig``,
``PseudoLabelConfig``) as an option, and ``--config FILE.toml`` (a run's saved ``config.toml``
works) with options given on the command line overriding the file.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.errors import InputError
from salcurate.training.folds import ScoreModelConfig
from salcurate.training.pseudo_label import PseudoLabelConfig
from salcurate.training.retrain import RetrainConfig
from salcurate.training.scorer import TrainScorerConfig


# --------------------------------------------------------------------------------------
# train-scorer
# --------------------------------------------------------------------------------------
def _scorer_status(info: dict[str, Any]) -> str:
    return f"L2 {info['loss']:.4f}" if info.get("loss") is not None else ""


def _print_epoch(m: dict[str, Any]) -> None:
    rho = "-" if m.get("val_spearman") is None else f"{m['val_spearman']:.3f}"
    out.print(f"epoch {m['epoch']}: train L2 {m['train_l2']:.4f}, val L2 {m['val_l2']:.4f}, val Spearman {rho} "
              f"({m['seconds']:.1f} s)", markup=False)


@config_command(app, "train-scorer", TrainScorerConfig, config_file=True)
def train_scorer(config: TrainScorerConfig) -> None:
    """Train the fine scorer (Table I) on synthesized samples (L2, Eq. 6), or on a score column (--target)."""
    from salcurate.training.scorer import run

    with RichEvents("training", status=_scorer_status, on_metrics=_print_epoch) as events:
        res = run(config, events=events)
    out.print(f"scorer saved to {escape(res.output)} ({res.items['train']} training / {res.items['val']} "
              f"validation items); log {escape(res.log)}, settings {escape(res.config_file)}")


# --------------------------------------------------------------------------------------
# retrain
# --------------------------------------------------------------------------------------
def _retrain_status(m: dict[str, Any]) -> str:
    if m.get("loss") is not None:
        return (f"loss {m['loss']:.3f} (sel {m['loss_sel']:.3f}, atten {m['loss_atten']:.3f}) "
                f"lr {m['lr']:.2e}")
    return f"lr {m['lr']:.2e}" if m.get("lr") is not None else ""


def _print_validation(m: dict[str, Any]) -> None:
    if "val_miou" in m:
        out.print(f"iteration {m['iteration']}: validation mIoU {100 * m['val_miou']:.1f}, pixel accuracy "
                  f"{100 * m['val_pixel_accuracy']:.1f}")


@config_command(app, "retrain", RetrainConfig, config_file=True)
def retrain(config: RetrainConfig) -> None:
    """Retrain SAL-Net on selected proxies with the selection and attention losses (Eq. 13-14)."""
    from salcurate.data.store import MaskStore
    from salcurate.distributed import env_info
    from salcurate.training.retrain import run

    if config.selection is None:
        with MaskStore(config.store) as st:
            have = ", ".join(st.selection_names()) or "none yet"
        raise InputError(f"pass --selection NAME (the store has: {have}; make one with `salcurate select`) "
                         "or --selection none to train on every proxy")
    main_rank = env_info().main
    with RichEvents("retraining", status=_retrain_status, on_metrics=_print_validation, show=main_rank) as events:
        res = run(config, events=events)
    if main_rank:
        out.print(f"model saved to {escape(res.model)} after {res.iterations} iterations ({res.seconds:.0f} s); "
                  f"checkpoint {escape(res.checkpoint)}, log {escape(res.log)}")


# --------------------------------------------------------------------------------------
# pseudo-label
# --------------------------------------------------------------------------------------
def _pseudo_label_status(info: dict[str, Any]) -> str:
    return f"loss {info['loss']:.4f} lr {info['lr']:.2e}" if info.get("loss") is not None else ""


def _percent(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _print_pseudo_label(m: dict[str, Any]) -> None:
    if "loss" in m:
        out.print(f"epoch {m['epoch']}: loss {m['loss']:.4f}, {m['images_per_s']:.1f} images/s "
                  f"({m['seconds']:.1f} s)", markup=False)
    elif "held_out_map" in m:
        out.print(f"classifier: held-out mAP {_percent(m['held_out_map'])} ({m['held_out_images']} images)",
                  markup=False)


@config_command(app, "pseudo-label", PseudoLabelConfig, config_file=True)
def pseudo_label(config: PseudoLabelConfig) -> None:
    """Proxies from image tags (P1): a tag classifier's CAMs, refined, stored as a named proxy set."""
    from salcurate.training.pseudo_label import run

    with RichEvents("pseudo-label", status=_pseudo_label_status, on_metrics=_print_pseudo_label) as events:
        res = run(config, events=events)
    quality = (f"mIoU {_percent(res.miou)} against ground truth on {res.counts['with_gt']} images (per-image mean "
               f"{_percent(res.miou_per_image)})" if res.miou is not None else "no ground truth to compare with")
    speed = "" if res.cam_images_per_s is None else f", {res.cam_images_per_s:.1f} images/s"
    out.print(f"proxy set {escape(res.proxy)!r}: {res.counts['proxies']} proxies in {res.cam_seconds:.1f} s{speed}; "
              f"{quality}")
    out.print(f"classifier (held-out mAP {_percent(res.map)}) saved to {escape(res.classifier)}; its backbone for "
              f"`salcurate retrain --backbone-weights` in {escape(res.backbone_file)}; log {escape(res.log)}")


# --------------------------------------------------------------------------------------
# score-model
# --------------------------------------------------------------------------------------
def _score_model_status(info: dict[str, Any]) -> str:
    return f"loss {info['loss']:.3f} lr {info['lr']:.2e}" if info.get("loss") is not None else ""


@config_command(app, "score-model", ScoreModelConfig, config_file=True)
def score_model(config: ScoreModelConfig) -> None:
    """Model agreement: K fold SAL-Nets judge the proxies they never saw (agree, mm, rr)."""
    from salcurate.training.folds import run

    with RichEvents("score-model", status=_score_model_status) as events:
        res = run(config, events=events)
    cols = ", ".join(res.columns.values())
    if res.nothing_to_do:
        out.print(f"model agreement with this config is already complete ({cols}); nothing to do")
        return
    losses = ", ".join("-" if v is None else f"{v:.3f}" for v in res.train_loss)
    out.print(f"judged {res.computed} proxies with {len(res.fold_sizes)} fold models in {res.seconds:.0f} s "
              f"(training {res.train_seconds:.0f} s, scoring {res.predict_seconds:.0f} s)"
              + (f"; resumed: {res.resumed} were done before" if res.resumed else "")
              + f"; columns {cols}; fold models in {escape(res.output)} (last training loss {losses})"
              + ("" if res.mean_agree is None else f"; mean {res.columns['agree']} {res.mean_agree:.3f}"))
