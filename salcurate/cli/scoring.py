"""CLI commands of the scoring stage: score-coarse, score-fine, score-combined, score-evidence."""

from __future__ import annotations

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.distributed import env_info
from salcurate.scoring.coarse import CoarseConfig
from salcurate.scoring.combined import CombinedConfig
from salcurate.scoring.evidence import EvidenceConfig
from salcurate.scoring.fine import ScoreFineConfig


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------
@config_command(app, "score-coarse", CoarseConfig)
def score_coarse(config: CoarseConfig) -> None:
    """Coarse scores: reference masks H, AC, F, CD and SC (Eq. 3-5)."""
    from salcurate.scoring.coarse import run

    main_rank = env_info().main  # under torchrun: rank 0 alone shows progress and prints
    with RichEvents("scoring", show=main_rank) as events:
        res = run(config, events=events)
    cols = ", ".join(res.columns.values())
    if not main_rank:
        return
    if res.nothing_to_do:
        out.print(f"coarse scores with this config are already complete ({cols}); nothing to do")
        return
    out.print(f"scored {res.computed} masks in {res.seconds:.1f} s"
              + (f" (resumed: {res.resumed} were done before)" if res.resumed else "")
              + f"; columns {cols}, reference masks {res.reference!r}"
              + ("" if res.mean_sc is None else f"; mean {res.columns['sc']} {res.mean_sc:.3f}"))


@config_command(app, "score-fine", ScoreFineConfig)
def score_fine(config: ScoreFineConfig) -> None:
    """Fine scores: P from the scorer network and SF = P x CD (Eq. 7)."""
    from salcurate.scoring.fine import run

    main_rank = env_info().main  # under torchrun: rank 0 alone shows progress and prints
    with RichEvents("scoring", show=main_rank) as events:
        res = run(config, events=events)
    cols = ", ".join(res.columns.values())
    if not main_rank:
        return
    if res.nothing_to_do:
        out.print(f"fine scores with this scorer are already complete ({cols}); nothing to do")
        return
    out.print(f"scored {res.computed} masks on {res.device} in {res.seconds:.1f} s"
              + (f" (resumed: {res.resumed} were done before)" if res.resumed else "")
              + f"; columns {cols}" + ("" if res.mean_sf is None else f"; mean {res.columns['sf']} {res.mean_sf:.3f}"))


@config_command(app, "score-combined", CombinedConfig)
def score_combined(config: CombinedConfig) -> None:
    """The combined score q: a weighted geometric mean of score columns and the tag prior."""
    from salcurate.scoring.combined import format_weights, run

    res = run(config)
    if res.nothing_to_do:
        out.print(f"the combined score {res.column} with these weights is already complete "
                  f"({format_weights(res.weights)}); nothing to do")
        return
    read = ", ".join(f"{name}={col}" if col else f"{name} (1 / tagged classes)" for name, col in res.columns.items())
    out.print(f"wrote {res.column} for {res.scored} masks: geometric mean with weights {format_weights(res.weights)} "
              f"of {read}" + ("" if res.mean_q is None else f"; mean {res.mean_q:.3f}"))


@config_command(app, "score-evidence", EvidenceConfig)
def score_evidence(config: EvidenceConfig) -> None:
    """Class evidence (ce) and tag confidence (tagp, tagx) from the tag classifier; reference contrast (rc)."""
    from salcurate.scoring.evidence import run

    main_rank = env_info().main  # under torchrun: rank 0 alone shows progress and prints
    with RichEvents("scoring", show=main_rank) as events:
        res = run(config, events=events)
    cols = ", ".join(res.columns.values())
    if not main_rank:
        return
    if res.nothing_to_do:
        out.print(f"evidence scores with this classifier are already complete ({cols}); nothing to do")
        return
    means = ", ".join(f"{res.columns[k]} {v:.3f}" for k, v in res.means.items() if v is not None)
    out.print(f"scored {res.computed} masks on {res.device} in {res.seconds:.1f} s"
              + ("" if res.images_per_s is None else f" ({res.images_per_s:.2f} images/s)")
              + (f" (resumed: {res.resumed} were done before)" if res.resumed else "")
              + f" with the tag classifier {res.classifier}; columns {cols}" + (f"; means {means}" if means else ""))


# --------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------
