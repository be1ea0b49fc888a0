"""CLI commands of the training stage: train-scorer, retrain.

Both take every setting of their config (``TrainScorerConfig``, ``RetrainConfig``) as an option,
and ``--config FILE.toml`` (a run's saved ``config.toml`` works) with options given on the
command line overriding the file.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.errors import InputError
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
    """Train the fine scorer (Table I) on synthesized samples (L2, Eq. 6)."""
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
    from salcurate.training.distributed import env_info
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
