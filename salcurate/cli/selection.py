"""CLI commands of the selection stage: select, evaluate-scores."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.selection.select import SelectConfig
from salcurate.selection.validation import EvaluateScoresConfig


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------
@config_command(app, "select", SelectConfig)
def select(config: SelectConfig) -> None:
    """Select masks by score (w = 1 if score >= tau, or the best K / fraction, per class if asked) as a selection."""
    from salcurate.data.store import IMPORTED_PROXY, column_proxy
    from salcurate.selection.select import run

    res = run(config)
    if res.by_default:
        if res.by.partition("@")[0].partition(":")[0] == "q":
            out.print(f"selecting by {escape(res.by)} (the combined score)")
        else:
            proxy = column_proxy(res.by)
            for_set = "" if proxy in (None, IMPORTED_PROXY) else f" --proxy {proxy}"
            out.print(f"selecting by {escape(res.by)}; run `salcurate score-combined{for_set}` for the combined score")
    if res.sweep is not None:
        t = Table(title=f"masks kept by {escape(res.by)} >= tau (NoS, the paper's Table IV row)")
        t.add_column("tau", justify="right")
        t.add_column("NoS", justify="right")
        for c in res.class_names[1:]:
            t.add_column(escape(c), justify="right")
        for row in res.sweep:
            t.add_row(f"{row['tau']:g}", str(row["kept"]), *map(str, row["per_class"]))
        out.print(t)
    if not config.has_rule():
        return
    t = Table(title="images per class (by tags" + ("; ranked within each class)" if res.per_class else ")"))
    for col in ("class", "scored", "kept"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for c, nb, na in zip(res.class_names[1:], res.per_class_before, res.per_class_after):
        t.add_row(escape(c), str(nb), str(na))
    out.print(t)
    verb = "selection " + repr(res.name) + (" written" if res.written else " not written (--dry-run)")
    out.print(f"kept {res.kept} of {res.scored} scored masks (NoS); {escape(verb)}")


@config_command(app, "evaluate-scores", EvaluateScoresConfig)
def evaluate_scores(
    config: EvaluateScoresConfig,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """How well a score predicts true mask quality (needs ground truth)."""
    from salcurate.selection.validation import run

    with RichEvents("true quality") as events:
        res = run(config, events=events)
    if as_json:
        out.print_json(json.dumps(res.to_dict()))
        return

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    out.print(f"{escape(res.score)} against true quality (AGT) on {res.samples} masks with ground truth: "
              f"Pearson {f(res.pearson)}, Spearman {f(res.spearman)}; "
              f"AUROC for finding masks with AGT < {res.bad_below:g}: {f(res.auroc_bad)} ({res.bad} such masks)")
    out.print(f"against the proxy's mIoU: Pearson {f(res.pearson_miou)}, Spearman {f(res.spearman_miou)}")
    t = Table(title=f"masks kept by {escape(res.score)} >= tau and their mean true quality "
                    f"(all: {f(res.mean_quality_all)})")
    for col in ("tau", "kept", "mean AGT"):
        t.add_column(col, justify="right")
    for row in res.taus:
        mean = row["mean_quality"]
        t.add_row(f"{row['tau']:g}", str(row["kept"]), "-" if mean is None else f"{mean:.3f}")
    out.print(t)
    if res.plot:
        out.print(f"scatter plot: {escape(res.plot)}")
