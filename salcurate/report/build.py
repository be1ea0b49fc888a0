"""``salcurate report``: one static HTML page to review a store's masks, scores and selections.

The folder holds ``index.html``, ``report.json`` (the resolved config and every number shown)
and ``img/`` (plots and thumbnails).  No server, no network, no JavaScript: it opens from disk
and can be zipped and shared.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from salcurate._version import __version__
from salcurate.config import setting, store_setting, to_dict
from salcurate.data.info import store_summary
from salcurate.data.store import IMPORTED_PROXY, MaskStore, proxy_column, utc_now
from salcurate.errors import InputError
from salcurate.events import NO_EVENTS, Events, Result
from salcurate.imageio import decode_image, voc_palette
from salcurate.paper import BEST_TAUS
from salcurate.report import data

log = logging.getLogger(__name__)

MARKER = "report.json"
THUMB_HEIGHT = 96


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Settings of ``report``; saved in the folder's ``report.json``."""

    store: str = store_setting()
    proxy: str | None = setting(None, "Proxy set to use (default: the imported one, or the only one).")
    output: str = setting("report", "Report folder (index.html and img/).", short="-o")
    by: str | None = setting(None, "Score for the galleries: sf or sc (default: sf when present).")
    k: int = setting(12, "Worst and best masks shown per gallery.")
    overwrite: bool = setting(False, "Replace an existing output.")
    workers: int = setting(0, "Thumbnail threads (0 = all cores).", cli=False)


@dataclasses.dataclass(frozen=True)
class ReportResult(Result):
    """Where the report is, the score its galleries use, and what it cost."""

    index: Path
    by: str | None
    thumbnails: int
    seconds: float
    size_bytes: int


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------
_PALETTE = voc_palette()


def _panel(rgb: np.ndarray, height: int) -> Image.Image:
    h, w = rgb.shape[:2]
    return Image.fromarray(rgb).resize((max(1, round(w * height / h)), height), Image.BILINEAR)


def thumbnail(image: np.ndarray, proxy: np.ndarray, reference: np.ndarray | None, gt: np.ndarray | None,
              *, height: int = THUMB_HEIGHT) -> bytes:
    """A strip [image | proxy overlay | reference H | ground truth] as JPEG bytes.

    image: ``(H, W, 3)`` uint8; proxy, gt: ``(H, W)`` uint8 labels; reference: ``(H, W)`` bool.
    """
    panels = [image]
    overlay = image.astype(np.float32)
    fg = (proxy != 0) & (proxy != 255)
    overlay[fg] = 0.45 * overlay[fg] + 0.55 * _PALETTE[proxy[fg]]
    panels.append(overlay.astype(np.uint8))
    if reference is not None:
        ref = (image.astype(np.float32) * 0.35).astype(np.uint8)
        ref[reference] = (60, 220, 90)
        panels.append(ref)
    if gt is not None:
        panels.append(_PALETTE[gt])
    tiles = [_panel(p, height) for p in panels]
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 3 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 3
    buf = io.BytesIO()
    strip.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _plot(path: Path, draw: Callable[[Any], None], *, size: tuple[float, float] = (5.0, 3.0)) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=100)
    draw(ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------
def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file() and not overwrite:
            raise InputError(f"{out}: folder is not empty and holds no salcurate report; pass overwrite "
                             "to write into it or choose another output folder", param="overwrite")
        if (out / MARKER).is_file() and not overwrite:
            raise InputError(f"{out}: holds a previous report; pass overwrite to replace it", param="overwrite")


@dataclasses.dataclass(frozen=True)
class _Content:
    """What the page shows, read from the store."""

    summary: dict[str, Any]
    proxy: str  # the proxy set shown
    scores: dict[str, np.ndarray]  # score column -> (N,) float64, NaN = not scored
    by: str | None  # the galleries' and the tau view's score
    k: int
    quality: np.ndarray | None  # (N,) true quality (AGT), None without ground truth
    classes: np.ndarray  # (N, C) bool tags
    class_names: tuple[str, ...]
    galleries: dict[str, dict[str, list[int]]]  # group -> {"worst": [...], "best": [...]}
    ids: tuple[str, ...]
    selections: dict[str, Any]

    @property
    def chosen(self) -> list[int]:
        """The samples shown in some gallery, in store order."""
        return sorted({i for g in self.galleries.values() for part in g.values() for i in part})


def _resolve(st: MaskStore, config: ReportConfig) -> tuple[str, str | None]:
    """The proxy set shown and the gallery score column asked for (None: the default).  A store
    without any proxies still gets its report (of the imported set, empty)."""
    if config.by is not None:
        column, proxy = st.resolve_column(config.by, config.proxy)
        return proxy, column
    if config.proxy is None and not st.proxy_names():
        return IMPORTED_PROXY, None
    return st.resolve_proxy(config.proxy), None


def _base(column: str) -> str:
    """A score column's kind: ``sf:cam`` and ``sf@1a2b3c`` are ``sf``."""
    return column.partition("@")[0].partition(":")[0]


def _read(st: MaskStore, config: ReportConfig) -> _Content:
    """Everything the page shows, from the store; checks ``by`` and ``k`` against it."""
    from salcurate.selection.validation import true_quality_of_store

    proxy, asked = _resolve(st, config)
    columns = [proxy_column(name, proxy) for name in data.SCORE_LABELS]
    scores = {name: st.score(name).astype(np.float64) for name in columns if name in st.score_names()}
    sf, sc = proxy_column("sf", proxy), proxy_column("sc", proxy)
    by = asked or (sf if sf in scores else sc if sc in scores else None)
    if asked is not None and asked not in st.score_names():
        have = ", ".join(st.score_names()) or "none"
        raise InputError(f"by {asked}: no such score in the store (it has: {have}); "
                         f"run `salcurate {data.MAKES.get(_base(asked), 'score-coarse')}` first", param="by")
    if by is not None and asked is not None and asked not in scores:
        scores[by] = st.score(by).astype(np.float64)
    n_scored = int((~np.isnan(scores[by])).sum()) if by else 0
    if by is not None and config.k > n_scored:
        raise InputError(f"k {config.k} is larger than the {n_scored} samples scored by {by}; "
                         f"choose k {n_scored} or less", param="k")
    classes = st.tags
    class_names = st.class_names
    quality = (true_quality_of_store(st, miou=False, proxy=proxy)[0]
               if st.has_map("gt").any() and proxy in st.map_names() else None)
    galleries: dict[str, dict[str, list[int]]] = {}
    if by is not None:
        galleries["all classes"] = data.gallery(scores[by], config.k)
        for c, name in enumerate(class_names[1:]):
            among = classes[:, c]
            if among.any():
                galleries[name] = data.gallery(scores[by], config.k, among=among)
    scored = ~np.isnan(scores[by]) if by else st.has_map(proxy)
    selections = {name: {"rule": st.selection_meta(name).get("rule"),
                         **data.selection_view(st.selection(name), classes, scored)}
                  for name in st.selection_names()}
    return _Content(store_summary(st), proxy, scores, by, config.k, quality, classes, class_names, galleries, st.ids,
                    selections)


def _thumbnails(st: MaskStore, img: Path, chosen: list[int], workers: int, events: Events,
                proxy: str = IMPORTED_PROXY) -> None:
    """``img/t{i}.jpg`` for every chosen sample (:func:`thumbnail`) with its map of proxy set ``proxy``."""
    reference = proxy_column("reference", proxy)
    ref_kind = reference if reference in st.map_names() else None

    def thumb(i: int) -> None:
        # Pillow, not torchvision: loading torch for a thousand decodes would cost ~700 MiB
        image = decode_image(st.image_bytes(i), backend="pillow")
        strip = thumbnail(image, st.map(proxy, i), st.map(ref_kind, i) if ref_kind else None, st.map("gt", i))
        (img / f"t{i}.jpg").write_bytes(strip)

    workers = workers if workers > 0 else (os.cpu_count() or 1)
    # reading is serialized by h5py; decoding, drawing and JPEG encoding run in parallel
    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(thumb, chosen), 1):
            if done % 16 == 0:
                events.advance(16)
    if len(chosen) % 16:
        events.advance(len(chosen) % 16)


def run(config: ReportConfig, *, events: Events | None = None) -> ReportResult:
    """Write the report folder for a store; see the module docstring.

    Reads the store, never writes to it.  Events: ``start(thumbnails)``, ``advance(n)`` as they
    are drawn.
    """
    events = events or NO_EVENTS
    started = time.time()
    out = Path(config.output)
    if config.k < 1:
        raise InputError(f"k must be at least 1, got {config.k}", param="k")
    _check_out(out, config.overwrite)
    with MaskStore(config.store) as st:
        content = _read(st, config)
        chosen = content.chosen
        events.start(len(chosen))
        img = out / "img"
        if img.exists():
            shutil.rmtree(img)
        img.mkdir(parents=True)
        _thumbnails(st, img, chosen, config.workers, events, content.proxy)
    (out / "index.html").write_text(_render(img, content), encoding="utf-8")
    meta = {"config": to_dict(dataclasses.replace(config, proxy=content.proxy)), "resolved_by": content.by,
            "created": utc_now(), "salcurate_version": __version__, "thumbnails": len(chosen)}
    (out / MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ReportResult(out / "index.html", content.by, len(chosen), time.time() - started, size)


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_section(c: _Content) -> list[str]:
    """The store's samples, classes, missing scores and run log."""
    e, summary = html.escape, c.summary
    parts = ["<h2 id='summary'>Summary</h2>"]
    parts.append(f"<p>{summary['num_samples']} samples, {summary['num_classes']} classes; splits: "
                 + e(", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
                 + "; maps: " + e(", ".join(f"{k} {v}" for k, v in summary["maps"].items()))
                 + f"; tags {summary['with_tags']}; strong {summary['strong']}.</p>")
    parts.append(_table(["class", "proxy images", "gt images", "tagged images"],
                        [[r["name"], r["proxy_images"], r["gt_images"],
                          "" if r["tagged_images"] is None else r["tagged_images"]] for r in summary["classes"]]))
    missing = [n for n in data.SCORE_LABELS if n not in c.scores]
    if missing:
        cmds = sorted({data.MAKES[n] for n in missing})
        parts.append(f"<p class='note'>Not in the store yet: {e(', '.join(missing))}. "
                     + " ".join(f"Run <code>salcurate {e(cmd)}</code>." for cmd in cmds) + "</p>")
    parts.append("<h3>Run log</h3>")
    parts.append(_table(["finished", "command", "seconds"],
                        [[x["finished"], x["command"], f"{x['duration_s']:.1f}"] for x in summary["log"]]))
    return parts


def _file_part(name: str) -> str:
    """A score column's name as part of a file name (``sc:cam`` → ``sc-cam``)."""
    return name.replace(":", "-")


def _scores_section(c: _Content, img: Path) -> list[str]:
    """A histogram per score, and its scatter against true quality when there is ground truth."""
    if not c.scores:
        return []
    e, quality = html.escape, c.quality
    parts = ["<h2 id='scores'>Score distributions</h2><div class='grid'>"]
    for name, values in c.scores.items():
        h = data.histogram(values)

        def draw(ax: Any, h: dict[str, Any] = h, name: str = name) -> None:
            ax.bar(np.array(h["edges"][:-1]), h["counts"], width=0.05, align="edge", color="#4c72b0")
            ax.set_xlim(0, 1)
            ax.set_xlabel(name)
            ax.set_ylabel("masks")

        fig = _plot(img / f"hist_{_file_part(name)}.png", draw)
        label = data.SCORE_LABELS.get(name) or (f"{data.SCORE_LABELS[_base(name)]} ({name})"
                                                if _base(name) in data.SCORE_LABELS else name)
        caption = f"{label}: {h['n']} masks, mean {_fmt(h['mean'])}"
        if quality is not None:
            a = data.agreement(values, quality)
            caption += f"; against true quality: Pearson {_fmt(a['pearson'])}, Spearman {_fmt(a['spearman'])}"

            def scat(ax: Any, values: np.ndarray = values, name: str = name) -> None:
                ok = ~np.isnan(values) & ~np.isnan(quality)
                ax.scatter(quality[ok], values[ok], s=4, alpha=0.5, linewidths=0)
                ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
                ax.set_xlim(-0.02, 1.02)
                ax.set_ylim(-0.02, 1.02)
                ax.set_xlabel("true quality (AGT)")
                ax.set_ylabel(name)

            sfig = _plot(img / f"scatter_{_file_part(name)}.png", scat, size=(3.2, 3.0))
            parts.append(f"<figure><img src='img/{fig}' alt='histogram of {e(name)}'>"
                         f"<img src='img/{sfig}' alt='{e(name)} against true quality'>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        else:
            parts.append(f"<figure><img src='img/{fig}' alt='histogram of {e(name)}'>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</div>")
    return parts


def _tau_section(c: _Content, img: Path) -> list[str]:
    """Masks kept, per class and their mean true quality, for each tau of the gallery score."""
    by = c.by
    if by is None:
        return []
    e, quality = html.escape, c.quality
    rows = data.tau_view(c.scores[by], c.classes, quality)
    marks = BEST_TAUS.get(by if "@" in by else _base(by), ())  # sc:cam is an SC too

    def draw_tau(ax: Any) -> None:
        taus = [r["tau"] for r in rows]
        ax.plot(taus, [r["kept"] for r in rows], marker="o", ms=3, label="masks kept (NoS)")
        ax.set_xlabel(f"tau ({by} >= tau)")
        ax.set_ylabel("masks kept")
        for m in marks:
            ax.axvline(m, color="#c44e52", ls=":", lw=1)
        if quality is not None:
            ax2 = ax.twinx()
            ax2.plot(taus, [np.nan if r["mean_quality"] is None else r["mean_quality"] for r in rows],
                     color="#55a868", marker="s", ms=3)
            ax2.set_ylabel("mean true quality of kept", color="#55a868")
            ax2.set_ylim(0, 1)

    fig = _plot(img / "tau.png", draw_tau, size=(6.0, 3.2))
    return [
        f"<h2 id='tau'>Choosing tau ({e(by)})</h2>",
        f"<figure><img src='img/{fig}' alt='masks kept and their quality for each tau'><figcaption>"
        f"Dotted lines: the paper's chosen taus for {e(by)} ({e(', '.join(map(str, marks)))}: VGG16, "
        "ResNet101).</figcaption></figure>",
        _table(["tau", "kept", "mean true quality", *c.class_names[1:]],
               [[f"{r['tau']:.2f}", r["kept"], _fmt(r["mean_quality"]), *r["per_class"]] for r in rows]),
    ]


def _galleries_section(c: _Content) -> list[str]:
    """The k worst and best masks by the gallery score, overall and per class."""
    if not c.galleries:
        return []
    e, quality, scores = html.escape, c.quality, c.scores
    parts = [f"<h2 id='galleries'>The {c.k} worst and best masks by {e(c.by or '')}</h2>",
             "<p class='note'>Each strip: image | proxy mask | reference mask H | ground truth "
             "(when present).</p>"]
    for group, g in c.galleries.items():
        parts.append(f"<h3>{e(group)}</h3>")
        for part in ("worst", "best"):
            items = []
            for i in g[part]:
                label = " ".join(f"{n} {scores[n][i]:.2f}" for n in scores if not np.isnan(scores[n][i]))
                if quality is not None and not np.isnan(quality[i]):
                    label += f" | true {quality[i]:.2f}"
                items.append(f"<figure class='t'><img src='img/t{i}.jpg' alt='{e(c.ids[i])}' loading='lazy'>"
                             f"<figcaption>{e(c.ids[i])}: {e(label)}</figcaption></figure>")
            parts.append(f"<h4>{part}</h4><div class='row'>{''.join(items)}</div>")
    return parts


def _selections_section(c: _Content) -> list[str]:
    """Each named selection: its rule, and what it keeps and drops per class."""
    if not c.selections:
        return []
    e = html.escape
    parts = ["<h2 id='selections'>Selections</h2>"]
    for name, s in c.selections.items():
        parts.append(f"<h3>{e(name)}: keeps {s['kept']}, drops {s['dropped']}</h3>"
                     f"<p><code>{e(json.dumps(s['rule'], sort_keys=True))}</code></p>")
        parts.append(_table(["class", "kept", "dropped"],
                            [[cls, k, d] for cls, k, d in zip(c.class_names[1:], s["kept_per_class"],
                                                              s["dropped_per_class"])]))
    return parts


_STYLE = """body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.row { display: flex; flex-wrap: wrap; gap: 0.6em; }
figure { margin: 0; } figure.t figcaption { font-size: 0.75em; max-width: 420px; }
.note { color: #555; } nav a { margin-right: 1em; }
"""

_NAV = ('<nav><a href="#summary">summary</a><a href="#scores">scores</a><a href="#tau">tau</a>'
        '<a href="#galleries">galleries</a><a href="#selections">selections</a></nav>')


def _render(img: Path, c: _Content) -> str:
    """The page: every section, with the plots it needs written to ``img``."""
    e = html.escape
    parts = [*_summary_section(c), *_scores_section(c, img), *_tau_section(c, img), *_galleries_section(c),
             *_selections_section(c)]
    title = f"salcurate report: {e(os.path.basename(c.summary['path']))}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="salcurate {e(__version__)}">
<title>{title}</title>
<style>
{_STYLE}</style></head><body>
<h1>{title}</h1>
{_NAV}
{''.join(parts)}
<p class="note">Written by salcurate {e(__version__)} on {e(utc_now())}.</p>
</body></html>
"""
