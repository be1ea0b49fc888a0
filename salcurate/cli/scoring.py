"""CLI commands of the scoring stage: score-coarse, score-fine."""

from __future__ import annotations

from salcurate.cli.core import RichEvents, app, config_command, out
from salcurate.scoring.coarse import CoarseConfig
from salcurate.scoring.fine import ScoreFineConfig


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------
@config_command(app, "score-coarse", CoarseConfig)
def score_coarse(config: CoarseConfig) -> None:
    """Coarse scores: reference masks H, AC, F, CD and SC (Eq. 3-5)."""
    from salcurate.scoring.coarse import run

    with RichEvents("scoring") as events:
        res = run(config, events=events)
    cols = ", ".join(res.columns.values())
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

    with RichEvents("scoring") as events:
        res = run(config, events=events)
    cols = ", ".join(res.columns.values())
    if res.nothing_to_do:
        out.print(f"fine scores with this scorer are already complete ({cols}); nothing to do")
        return
    out.print(f"scored {res.computed} masks on {res.device} in {res.seconds:.1f} s"
              + (f" (resumed: {res.resumed} were done before)" if res.resumed else "")
              + f"; columns {cols}" + ("" if res.mean_sf is None else f"; mean {res.columns['sf']} {res.mean_sf:.3f}"))


# --------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------
