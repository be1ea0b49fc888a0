"""The mask store: a small root file with links to immutable part files (schema v2).

This is the only module of salcurate that imports h5py.  The layout is documented in
``docs/store-format.md`` so that the store can be read with plain h5py or ``h5dump``.

Layout (schema v2): the user names one file, ``masks.h5``: the *root*.  It holds the class
names, the run log and HDF5 external links; everything else lives in *part* files in the folder
``masks.h5.d/`` beside it, each written once and never changed: the imported samples, images and
maps in one part, and each later write (score columns, selections, reference masks, proxy sets)
in a part of its own.  Plain h5py follows the links, so ``f["scores/sc"]`` reads as before.

Durability model (nothing is lost, ``kill -9`` included):

* A write (:func:`create_store`, :func:`transaction`) puts its new data in a new part file,
  builds a new root beside the old one (``.NAME.PID.partial``), fsyncs both and renames the
  root over the old one.  A killed writer leaves the old root, which does not know the new
  part; the next writer deletes parts no root refers to.  So a write costs what it adds (a
  score column, a selection), not the size of the store, and bulk data is never copied.
* A reader opens the root and every part it links to at once, so a writer that replaces a
  column (and deletes its old part) never changes what an open reader sees.
* Long resumable computations keep their partial results outside the store, in a work area
  (``salcurate.data.workarea``), and commit complete results in one transaction.
* Every dataset in a part carries HDF5's fletcher32 checksum: damaged bytes are an error on
  read, never silent; :func:`check_store` lists the damaged samples.

Schema v1 stores (one file, everything inside) are read as they are and migrated to v2 on the
first write or by :func:`migrate` (the v1 file is kept beside the store as a backup).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from salcurate._version import __version__
from salcurate.errors import InputError, StoreError

try:  # POSIX advisory locks; on other systems writers are not serialized
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT_NAME = "salcurate.maskstore"
SCHEMA_VERSION = 2
#: Where the part files of store ``NAME`` live: the folder ``NAME`` + this suffix.
PARTS_SUFFIX = ".d"
#: Root entries that are links to a part (the imported data).
_LINKED_TOP: tuple[str, ...] = ("samples", "images")
#: Root groups whose members are links to parts, one per map kind, score column or selection.
_LINK_GROUPS: tuple[str, ...] = ("maps", "scores", "selections")
#: Per-sample maps every store has (possibly empty for some samples).  Later commands add
#: more, e.g. reference masks ``reference`` from ``score-coarse``.
MAP_KINDS: tuple[str, ...] = ("proxy", "gt", "saliency")
#: Maps holding class indices (a class histogram is kept for these).
LABEL_KINDS: tuple[str, ...] = ("proxy", "gt")
#: Maps kept as 8-bit grey PNG files (smooth grey maps: PNG's row filters beat plain deflate).
PNG_KINDS: tuple[str, ...] = ("saliency",)
IGNORE_LABEL = 255
#: The name of the imported proxy set (map kind ``proxy``); other proxy sets are map kinds
#: of their own name with the group attribute ``role = "proxy"``.
IMPORTED_PROXY = "proxy"
#: Names a new proxy set may not take: imported maps and the reference masks' prefix.
_RESERVED_MAP_NAMES: tuple[str, ...] = (*MAP_KINDS, "reference")
_PROXY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_MAKE_PROXIES = "make a set with `salcurate pseudo-label` or import proxies with `salcurate import ... --pseudo DIR`"

_STR = h5py.string_dtype("utf-8")
_PIXEL_CHUNK = 1 << 17  # 128 KiB of a flat map array per chunk
_BYTES_CHUNK = 1 << 18  # 256 KiB of encoded image bytes per chunk
_DEFLATE = 4
#: Class histograms are mostly zeros (an image holds a few of C classes): byte shuffle + deflate
#: makes them ~30x smaller, so ``info`` on a COCO-sized store reads a megabyte, not 40.
_HIST_FILTERS: dict[str, Any] = dict(shuffle=True, compression="gzip", compression_opts=1)
_RDCC = dict(rdcc_nbytes=4 << 20, rdcc_nslots=1021, rdcc_w0=1.0)  # reads touch at most 2 chunks


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string (what the store records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class SampleRecord:
    """One sample to be written: the original image bytes and its decoded maps.

    Shapes: ``proxy``, ``gt``, ``saliency``: ``(H, W)`` uint8 or None; ``tags``: ``(C,)`` bool
    over the foreground classes 1..C, or None when the tags are unknown.
    """

    id: str
    split: str
    image_bytes: bytes
    image_format: str
    height: int
    width: int
    proxy: np.ndarray | None = None
    gt: np.ndarray | None = None
    saliency: np.ndarray | None = None
    tags: np.ndarray | None = None
    strong: bool = False
    #: The saliency map's PNG file bytes when it came as an 8-bit grey PNG (kept bit-exact).
    saliency_png: bytes | None = None

    def map(self, kind: str) -> np.ndarray | None:
        return getattr(self, kind)

    def encoded(self, kind: str) -> np.ndarray | None:
        """The flat uint8 array the store keeps for this map (pixels, or PNG bytes)."""
        values = self.map(kind)
        if values is None:
            return None
        if kind in PNG_KINDS:
            from salcurate.imageio import encode_grey_png

            return np.frombuffer(self.saliency_png or encode_grey_png(values), np.uint8)
        return values.reshape(-1)


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One command that wrote to the store."""

    command: str
    config: dict[str, Any]
    started: str
    finished: str
    duration_s: float
    salcurate_version: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)


# --------------------------------------------------------------------------------------
# Opening and checking
# --------------------------------------------------------------------------------------
def _check_store_file(path: Path) -> None:
    if not path.exists():
        raise StoreError(
            f"{path}: no mask store here; create one with `salcurate import voc ROOT -o {path}` "
            "or pass the store path as the first argument"
        )
    if path.is_dir():
        raise StoreError(f"{path}: expected a mask store file, got a folder; pass the .h5 file inside it")
    if not h5py.is_hdf5(str(path)):
        raise StoreError(
            f"{path}: expected an HDF5 mask store, but the file is not HDF5; "
            "pass a store made by `salcurate import`"
        )


def _check_schema(f: h5py.File, path: Path) -> int:
    fmt = f.attrs.get("salcurate_format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise StoreError(
            f"{path}: an HDF5 file, but not a salcurate mask store (no salcurate_format attribute); "
            "make one with `salcurate import`"
        )
    try:
        version = int(f.attrs.get("schema_version", -1))
    except (TypeError, ValueError):
        raise StoreError(f"{path}: the store's schema_version {f.attrs.get('schema_version')!r} is not a whole "
                         f"number; the store is damaged: run `salcurate check {path}` or restore a copy") from None
    if version > SCHEMA_VERSION:
        writer = f.attrs.get("salcurate_version", "a newer version")
        raise StoreError(
            f"{path}: store schema v{version} (written by salcurate {writer}) is newer than "
            f"this salcurate {__version__} reads (v{SCHEMA_VERSION}); upgrade salcurate"
        )
    if version < 1:
        raise StoreError(f"{path}: unknown store schema version {version}; re-import the dataset")
    return version


def _short(exc: BaseException) -> str:
    """An exception's message on one line, without HDF5's error-stack noise."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


class _PartMissing(Exception):
    """A part file the root links to is not there (deleted by a writer since, or lost)."""


def parts_dir(path: Path) -> Path:
    """The folder holding the part files of the store at ``path`` (``masks.h5`` → ``masks.h5.d``)."""
    return path.with_name(path.name + PARTS_SUFFIX)


def _read_links(root: h5py.File, path: Path) -> dict[str, h5py.ExternalLink]:
    """The root's external links by path (``samples``, ``maps/cam``, ``scores/sc``, ...); none in v1."""
    links: dict[str, h5py.ExternalLink] = {}
    try:
        for name in _LINKED_TOP:
            link = root.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                links[name] = link
        for group in _LINK_GROUPS:
            g = root.get(group)
            if g is None:
                continue
            for name in g:
                link = g.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    links[f"{group}/{name}"] = link
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{path}: the store's root is damaged ({_short(exc)}); run `salcurate check {path}` "
                         "or restore a copy") from None
    return links


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(str(path), mode, **_RDCC)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open the store ({exc}); check the file and its permissions") from None


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
class MaskStore:
    """Read access to a mask store.  Small per-sample arrays are loaded on open.

    >>> with MaskStore("masks.h5") as store:          # doctest: +SKIP
    ...     labels = store.map("proxy", 0)           # (H, W) uint8
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _check_store_file(self.path)
        self._parts: dict[str, h5py.File] = {}
        for attempt in range(3):  # a writer may delete a part between our root and part opens: retry
            self._f = _open_h5(self.path, "r")
            try:
                self.schema_version = _check_schema(self._f, self.path)
                self._links = _read_links(self._f, self.path)
                self._open_parts()
                break
            except _PartMissing as missing:
                self.close()
                if attempt == 2:
                    raise StoreError(f"{self.path}: the part file {missing} is missing; the store is damaged: "
                                     f"run `salcurate check {self.path}`") from None
                time.sleep(0.05)
            except Exception:
                self.close()
                raise
        try:
            self._load()
        except (KeyError, ValueError, TypeError, OSError) as exc:
            self.close()
            raise StoreError(f"{self.path}: the store's layout is damaged ({_short(exc)}); "
                             f"run `salcurate check {self.path}`, re-import the dataset or restore a copy") from None
        except Exception:
            self.close()
            raise

    def _open_parts(self) -> None:
        folder = self.path.parent
        for link in self._links.values():
            if link.filename in self._parts:
                continue
            part = folder / link.filename
            if not part.exists():
                raise _PartMissing(link.filename)
            try:
                self._parts[link.filename] = h5py.File(str(part), "r", **_RDCC)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot open its part file {link.filename} ({_short(exc)}); "
                                 f"the store is damaged: run `salcurate check {self.path}`") from None

    def _obj(self, path: str) -> Any:
        """An object of the store by its path, following the root's links to the parts."""
        head = path.split("/", 2)
        for k in (1, 2):
            key = "/".join(head[:k])
            link = self._links.get(key)
            if link is not None:
                return self._parts[link.filename][link.path + path[len(key):]]
        return self._f[path]

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        for part in self._parts.values():
            with contextlib.suppress(Exception):
                part.close()
        self._parts = {}
        with contextlib.suppress(Exception):
            self._f.close()

    def __enter__(self) -> MaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> None:
        f = self._f
        for group in ("classes", "samples", "images", *_LINK_GROUPS, "log"):
            if f.get(group, getlink=True) is None:  # the link itself: not opening its part again
                raise KeyError(f"no {group!r} group")
        obj = self._obj
        self.class_names: tuple[str, ...] = tuple(f["classes/names"].asstr()[:])
        self.heights: np.ndarray = obj("samples/height")[:].astype(np.int64)
        self.widths: np.ndarray = obj("samples/width")[:].astype(np.int64)
        self.strong: np.ndarray = obj("samples/strong")[:].astype(bool)
        self.tags: np.ndarray = obj("samples/tags")[:].astype(bool)
        self.has_tags: np.ndarray = obj("samples/has_tags")[:].astype(bool)
        self._image_offsets = obj("images/offsets")[:]
        kinds = list(f["maps"])
        groups = {k: obj(f"maps/{k}") for k in kinds}
        self._map_offsets = {k: groups[k]["offsets"][:] for k in kinds}
        self._map_encoding = {k: _attr_str(groups[k], "encoding", "pixels") for k in kinds}
        sets = [k for k in kinds if k != IMPORTED_PROXY and _attr_str(groups[k], "role", "") == "proxy"]
        self._proxy_sets: tuple[str, ...] = tuple(sorted(sets, key=lambda k: _creation_key(groups[k], k)))
        self._datasets: dict[str, h5py.Dataset] = {}
        self._histograms: dict[str, np.ndarray] = {}
        n = len(self.heights)
        for name in ("samples/id", "samples/split", "images/format"):
            if obj(name).shape != (n,):
                raise ValueError(f"{name} has {obj(name).shape[0]} entries for {n} samples")
        for what, size in (("images/offsets", len(self._image_offsets)),
                           *((f"maps/{k}/offsets", len(v)) for k, v in self._map_offsets.items())):
            if size != n + 1:
                raise ValueError(f"{what} has {size} entries for {n} samples")

    def _ds(self, name: str) -> h5py.Dataset:
        """A dataset by path, looked up once (path resolution costs more than a small read)."""
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets[name] = self._obj(name)
        return ds

    @contextlib.contextmanager
    def _reading(self, what: str, i: int | None = None) -> Iterator[None]:
        """Damaged bytes (a failed checksum or decompression, an undecodable file) become one line."""
        try:
            yield
        except (OSError, ValueError, KeyError) as exc:
            raise self._damaged(what, i, exc) from None

    def _damaged(self, what: str, i: int | None, exc: BaseException) -> StoreError:
        where = f"sample {self.ids[i]!r} (index {i}): " if i is not None and 0 <= i < len(self) else ""
        error = StoreError(f"{self.path}: {where}cannot read {what}: the store is damaged ({_short(exc)}); "
                           f"run `salcurate check {self.path}` to list the damaged samples")
        error.damage = f"cannot read {what} ({_short(exc)})"  # what `check` lists
        return error

    # -- store level -----------------------------------------------------------------
    # ids, splits and image formats are read on first use: opening a COCO-sized store for a
    # command that needs none of them (select, a score column) stays fast.
    @functools.cached_property
    def ids(self) -> tuple[str, ...]:
        """``(N,)`` sample ids."""
        return tuple(_read_strings(self._obj("samples/id")))

    @functools.cached_property
    def splits(self) -> np.ndarray:
        """``(N,)`` object array of split names."""
        return np.asarray(_read_strings(self._obj("samples/split")), dtype=object)

    @functools.cached_property
    def image_formats(self) -> tuple[str, ...]:
        """``(N,)`` image file formats (``JPEG``, ``PNG``, ...)."""
        return tuple(_read_strings(self._obj("images/format")))

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {sample_id: i for i, sample_id in enumerate(self.ids)}

    @property
    def num_samples(self) -> int:
        return len(self.heights)

    def __len__(self) -> int:
        return len(self.heights)

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes (class names minus background)."""
        return len(self.class_names) - 1

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._f.attrs.items()}

    def index_of(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise StoreError(f"{self.path}: no sample with id {sample_id!r}; "
                             "list ids with `salcurate export`") from None

    def split_names(self) -> list[str]:
        return sorted(set(self.splits.tolist()))

    # -- images ----------------------------------------------------------------------
    def image_bytes(self, i: int) -> bytes:
        """The original image file's bytes, bit-exact."""
        lo, hi = self._image_offsets[i], self._image_offsets[i + 1]
        with self._reading("its image", i):
            return self._ds("images/bytes")[lo:hi].tobytes()

    def image(self, i: int) -> np.ndarray:
        """The decoded image: ``(H, W, 3)`` uint8 RGB."""
        from salcurate.imageio import decode_image

        data = self.image_bytes(i)
        try:
            return decode_image(data)
        except Exception as exc:  # any decoder's error on damaged bytes
            raise self._damaged("its image (it does not decode)", i, exc) from None

    # -- maps ------------------------------------------------------------------------
    def map_names(self) -> list[str]:
        """The kinds of per-sample maps in the store (``proxy``, ``gt``, ``saliency``, ...)."""
        return sorted(self._map_offsets)

    def map_meta(self, kind: str) -> dict[str, Any]:
        self._check_kind(kind)
        return _attrs_json(self._obj(f"maps/{kind}"))

    def proxy_stamp(self, proxy: str) -> str:
        """Which write of proxy set ``proxy`` the store holds (empty for the imported set): work areas
        of scores made from it carry the stamp, so that a replaced set never resumes old partial results."""
        meta = self.map_meta(proxy)
        return str(meta.get("uid") or meta.get("created", ""))

    def has_map(self, kind: str) -> np.ndarray:
        """``(N,)`` bool: which samples hold a map of this kind."""
        off = self._map_offsets[self._check_kind(kind)]
        return off[1:] > off[:-1]

    def _check_kind(self, kind: str) -> str:
        if kind not in self._map_offsets:
            raise StoreError(f"{self.path}: no maps {kind!r} in the store (it has: {', '.join(self.map_names())})")
        return kind

    def map(self, kind: str, i: int) -> np.ndarray | None:
        """One sample's map: ``(H, W)`` uint8, or None when the sample has none."""
        off = self._map_offsets[self._check_kind(kind)]
        lo, hi = int(off[i]), int(off[i + 1])
        if hi == lo:
            return None
        with self._reading(f"its {kind!r} map", i):
            return self._decode_map(kind, i, self._ds(self._data_path(kind))[lo:hi])

    def _data_path(self, kind: str) -> str:
        return f"maps/{kind}/{self._map_encoding[kind]}"

    def _decode_map(self, kind: str, i: int, flat: np.ndarray) -> np.ndarray:
        encoding = self._map_encoding[kind]
        h, w = int(self.heights[i]), int(self.widths[i])
        if encoding == "png":
            from salcurate.imageio import read_grey_png

            return read_grey_png(flat.tobytes())
        if encoding == "bits":
            return np.unpackbits(flat, count=h * w).reshape(h, w).view(bool)
        return flat.reshape(h, w)

    def iter_maps(
        self, kind: str, indices: Sequence[int] | None = None, *, block_bytes: int = 16 << 20
    ) -> Iterator[tuple[int, np.ndarray | None]]:
        """Yield ``(i, map or None)`` in index order, reading large contiguous blocks."""
        off = self._map_offsets[self._check_kind(kind)]
        order = np.arange(len(self)) if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
        pixels = self._ds(self._data_path(kind))
        pos = 0
        while pos < len(order):
            first = int(order[pos])
            end = pos
            while end < len(order) and off[int(order[end]) + 1] - off[first] <= block_bytes:
                end += 1
            end = max(end, pos + 1)
            lo, hi = int(off[first]), int(off[int(order[end - 1]) + 1])
            try:
                block = pixels[lo:hi] if hi > lo else np.empty(0, np.uint8)
            except OSError:  # damaged: read sample by sample to name the first damaged one
                for i in order[pos:end]:
                    self.map(kind, int(i))
                raise
            for i in order[pos:end]:
                i = int(i)
                a, b = int(off[i]) - lo, int(off[i + 1]) - lo
                if b > a:
                    with self._reading(f"its {kind!r} map", i):
                        yield i, self._decode_map(kind, i, block[a:b])
                else:
                    yield i, None
            pos = end

    def class_histogram(self, kind: str) -> np.ndarray:
        """``(N, C + 2)`` int64 pixel counts per class (read-only); the last column counts ignore (255) pixels.

        Kept for the label maps: ``proxy``, ``gt`` and every proxy set.
        """
        if kind not in LABEL_KINDS and kind not in self._proxy_sets:
            have = ", ".join((*LABEL_KINDS, *self._proxy_sets))
            raise StoreError(f"class histograms exist for {have}, not {kind!r}")
        cached = self._histograms.get(kind)
        if cached is not None:
            return cached
        with self._reading(f"the class histogram of {kind!r}"):
            hist = self._obj(f"maps/{kind}/histogram")[:].astype(np.int64)
        if len(hist) < self.num_samples:  # samples appended by a salcurate that did not grow this set's histogram
            hist = np.concatenate([hist, np.zeros((self.num_samples - len(hist), hist.shape[1]), np.int64)])
        hist.setflags(write=False)  # shared by every caller: parts never change, so read once per open store
        self._histograms[kind] = hist
        return hist

    # -- proxy sets ------------------------------------------------------------------
    def proxy_names(self) -> list[str]:
        """The proxy sets: ``proxy`` (imported) first when any sample has one, then the others
        in creation order."""
        imported = [IMPORTED_PROXY] if bool(self.has_map(IMPORTED_PROXY).any()) else []
        return [*imported, *self._proxy_sets]

    def resolve_proxy(self, name: str | None) -> str:
        """The proxy set a command uses: ``name`` when it exists; for None the imported set,
        else the only one.  Raises a one-line error listing the sets otherwise."""
        names = self.proxy_names()
        listed = f"[{', '.join(names)}]"  # the imported set comes first, so the CLI leaves its name alone
        if name is None:
            if IMPORTED_PROXY in names:
                return IMPORTED_PROXY
            if len(names) == 1:
                return names[0]
            if not names:
                raise StoreError(f"{self.path}: the store has no proxies; {_MAKE_PROXIES}", param="proxy")
            raise InputError(f"{self.path}: the store has several sets of proxies {listed}; choose one with proxy",
                             param="proxy")
        if name in names:
            return name
        what = "no imported proxies" if name == IMPORTED_PROXY else f"no set of proxies named {name!r}"
        if not names:
            raise StoreError(f"{self.path}: the store has {what} and no other; {_MAKE_PROXIES}", param="proxy")
        raise InputError(f"{self.path}: the store has {what}; it has {listed}: choose one of them with proxy "
                         f"or {_MAKE_PROXIES}", param="proxy")

    def proxy_run_config(self, proxy: str) -> dict[str, Any] | None:
        """The resolved config of the ``pseudo-label`` run that made set ``proxy`` (its ``output``
        folder holds the tag classifier), or None for a set made otherwise."""
        meta = self.map_meta(proxy)
        config = meta.get("config")
        return config if meta.get("command") == "pseudo-label" and isinstance(config, dict) else None

    def locate(self, path: str | os.PathLike[str]) -> Path:
        """A path a run recorded: as given when absolute or present, else beside the store (a run
        started in the store's folder), else as given."""
        path = Path(path)
        if path.is_absolute() or path.exists():
            return path
        beside = self.path.parent / path
        return beside if beside.exists() else path

    def resolve_proxy_masks(self, name: str | None) -> tuple[str, np.ndarray]:
        """The proxy set a scoring command uses (as :meth:`resolve_proxy`) and ``(N,)`` which
        samples hold one of its masks; a one-line error for a store without proxies or an empty set."""
        if name is None and not self.proxy_names():
            raise StoreError(f"{self.path}: the store has no proxy masks; {_MAKE_PROXIES}")
        proxy = self.resolve_proxy(name)
        has_proxy = self.has_map(proxy)
        if not has_proxy.any():
            raise StoreError(f"{self.path}: the set of proxies {proxy!r} holds no masks; make it again with "
                             "`salcurate pseudo-label`")
        return proxy, has_proxy

    def resolve_column(self, name: str, proxy: str | None) -> tuple[str, str]:
        """Score column ``name`` (``sc``, ``sf@1a2b3c``) of proxy set ``proxy`` (resolved as by
        :meth:`resolve_proxy`), and the set: ``("sc:cam", "cam")``.  A name that carries its set
        already (``sc:cam``) is kept, and ``proxy`` must be None or that set."""
        named = column_proxy(name)
        if named is None:
            proxy = self.resolve_proxy(proxy)
            return proxy_column(name, proxy), proxy
        if proxy is not None and proxy != named:
            raise InputError(f"the column {name!r} belongs to the set of proxies {named!r}, not to the one chosen "
                             f"with proxy; name the column without ':{named}' or choose {named!r}", param="proxy")
        return name, self.resolve_proxy(named)

    # -- scores and selections -------------------------------------------------------
    def score_names(self) -> list[str]:
        return sorted(self._f["scores"].keys())

    def score(self, name: str) -> np.ndarray:
        """``(N,)`` float32; NaN where not (yet) computed."""
        if name not in self._f["scores"]:
            have = ", ".join(self.score_names()) or "none"
            raise StoreError(f"{self.path}: no score column {name!r} (the store has: {have})")
        with self._reading(f"score column {name!r}"):
            return self._obj(f"scores/{name}")[:]

    def score_meta(self, name: str) -> dict[str, Any]:
        self.score(name)  # existence check with its message
        return _attrs_json(self._obj(f"scores/{name}"))

    def selection_names(self) -> list[str]:
        return sorted(self._f["selections"].keys())

    def selection(self, name: str) -> np.ndarray:
        """``(N,)`` float32 weight per sample (Eq. 9: 1 kept, 0 dropped)."""
        if name not in self._f["selections"]:
            have = ", ".join(self.selection_names()) or "none"
            raise StoreError(f"{self.path}: no selection {name!r} (the store has: {have}); "
                             "make one with `salcurate select`")
        with self._reading(f"selection {name!r}"):
            return self._obj(f"selections/{name}")[:]

    def selection_meta(self, name: str) -> dict[str, Any]:
        self.selection(name)
        return _attrs_json(self._obj(f"selections/{name}"))

    def run_log(self) -> list[dict[str, Any]]:
        with self._reading("the run log"):
            return [json.loads(s) for s in self._f["log/entries"].asstr()[:]]


class StoreHandle:
    """For datasets that data-loader workers read: the store opens on first use in each process.

    An open HDF5 file cannot be pickled or shared across fork, so the handle is dropped when the
    object is pickled and reopened by ``store`` in the process that uses it.  Subclasses set
    ``store_path``.
    """

    store_path: str
    _store: MaskStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> MaskStore:
        if self._store is None:
            self._store = MaskStore(self.store_path)
        return self._store


def _attrs_json(obj: h5py.HLObject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.attrs.items():
        v = v.decode() if isinstance(v, bytes) else v
        if isinstance(v, str) and k in ("config", "rule"):
            v = json.loads(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _attr_str(obj: h5py.HLObject, name: str, default: str) -> str:
    value = obj.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _creation_key(group: h5py.Group, name: str) -> tuple[int, str, str]:
    """Sort key of a proxy set by creation: its sequence number, then time and name."""
    return int(group.attrs.get("order", 0)), _attr_str(group, "created", ""), name


def proxy_column(base: str, proxy: str) -> str:
    """The name of a score, selection or map column made from proxy set ``proxy``.

    ``base`` itself for the imported set (``sc``, ``reference``), ``base:proxy`` for others
    (``sc:cam``, ``reference:cam``); the set's name goes before a config-hash suffix
    (``sc@1a2b3c`` → ``sc:cam@1a2b3c``), as ``score-coarse`` names its columns.
    """
    if proxy == IMPORTED_PROXY:
        return base
    head, at, tail = base.partition("@")
    return f"{head}:{proxy}{at}{tail}"


def column_proxy(name: str) -> str | None:
    """The proxy set a column name carries (``sc:cam@1a2b3c`` → ``cam``), or None (``sc``)."""
    proxy = name.partition("@")[0].partition(":")[2]
    return proxy or None


def check_proxy_set_name(name: str, *, param: str = "name") -> None:
    """A new proxy set's name: letters, digits, ``-``, ``_``, ``.``; not an imported map kind.

    ``param``: the setting that gave the name (the CLI shows it as its flag).
    """
    if not isinstance(name, str) or not _PROXY_NAME.fullmatch(name):
        raise InputError(f"invalid name {name!r} for a set of proxies, given as {param}: use letters, digits, '-', "
                         "'_' and '.', starting with a letter or digit", param=param)
    if name in _RESERVED_MAP_NAMES or name.startswith("reference"):
        # names in brackets: the CLI rewrites the word `proxy` into its flag elsewhere
        raise InputError(f"{param} [{name}] is reserved for the store's own maps [proxy, gt, saliency, "
                         "reference*]; choose another for the set of proxies", param=param)


def _data_path(kind: str) -> str:
    """Where a built-in map kind keeps its data (used while writing)."""
    return f"maps/{kind}/png" if kind in PNG_KINDS else f"maps/{kind}/pixels"


# --------------------------------------------------------------------------------------
# Locking, permissions and atomic replacement
# --------------------------------------------------------------------------------------
def _partial_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.partial")


@contextlib.contextmanager
def _write_lock(dest: Path) -> Iterator[None]:
    """Serialize writers of one store (advisory lock on a hidden file beside it)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = dest.with_name(f".{dest.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        with contextlib.suppress(OSError):  # as private as the store
            keep_mode(lock_path, dest)
    except OSError as exc:
        raise StoreError(f"{dest}: cannot create the lock file {lock_path} ({exc}); "
                         "check the folder's permissions") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(
                f"{dest}: another salcurate command is writing to this store; wait for it to finish"
            ) from None
        # Only the lock holder makes partial files, so any left over are from killed writers.
        for stale in dest.parent.glob(f".{dest.name}.*.partial"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield
    finally:
        os.close(fd)


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _check_writable(path: Path) -> None:
    """Refuse to write a store its user may not write (or made read-only on purpose)."""
    st = path.stat()
    if not st.st_mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise StoreError(f"{path}: the store is read-only (mode {stat.filemode(st.st_mode)}); salcurate writes only "
                         f"stores you may write: make it writable (`chmod u+w {path}`) or work on a copy "
                         f"(copy {path.name} and its folder {parts_dir(path).name} together)")
    for folder in (path.parent, parts_dir(path)):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"{path}: cannot write in the folder {folder} (permission denied); "
                             "make it writable or work on a copy of the store")


def keep_mode(path: Path, like: Path | None, *, folder: bool = False) -> None:
    """Give ``path`` the permission bits, owner and group of ``like`` (a folder gets x where r is set)."""
    if like is None or not like.exists():
        return
    st = like.stat()
    mode = stat.S_IMODE(st.st_mode)
    if folder:
        mode |= (mode & 0o444) >> 2 | stat.S_IWUSR
    os.chmod(path, mode)
    with contextlib.suppress(OSError):  # only root may give a file away; group changes need membership
        os.chown(path, st.st_uid, st.st_gid)


def _commit(partial: Path, dest: Path) -> None:
    """Rename a finished root over ``dest`` atomically, keeping ``dest``'s mode, owner and group."""
    keep_mode(partial, dest)
    _fsync_path(partial)
    os.replace(partial, dest)
    _fsync_path(dest.parent, directory=True)


def _referenced_parts(path: Path) -> set[str]:
    """The part files (as the root's links name them) the store at ``path`` refers to."""
    with _open_h5(path, "r") as root:
        return {link.filename for link in _read_links(root, path).values()}


def _collect_garbage(path: Path) -> list[str]:
    """Delete the part files in ``path``'s folder that its root does not refer to (a killed writer's,
    replaced columns'); only a writer holding the lock calls this.  Returns the names deleted."""
    folder = parts_dir(path)
    if not folder.is_dir() or not path.exists():
        return []
    keep = _referenced_parts(path)
    removed = []
    for part in folder.iterdir():
        if part.suffix in (".h5", ".partial") and f"{folder.name}/{part.name}" not in keep:
            with contextlib.suppress(OSError):
                part.unlink()
                removed.append(part.name)
    if removed:
        log.debug("removed %d part files no longer used: %s", len(removed), ", ".join(removed))
    return removed


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def _create(group: h5py.Group, name: str, **kwargs: Any) -> h5py.Dataset:
    """A dataset of a part file, with HDF5's fletcher32 checksum (all but variable-length strings,
    which HDF5 cannot filter)."""
    dtype = kwargs.get("dtype", getattr(kwargs.get("data"), "dtype", None))
    vlen = dtype is not None and h5py.check_string_dtype(np.dtype(dtype)) is not None \
        and h5py.check_string_dtype(np.dtype(dtype)).length is None
    return group.create_dataset(name, fletcher32=not vlen, **kwargs)


class _Writable:
    """Write operations on a store being changed: a new root (``f``) and a new part for the data.

    Reads go through the root's links; new data goes into this write's part file
    (``masks.h5.d/KIND-UID.h5``), made on first use, and the root links to it.
    """

    def __init__(self, f: h5py.File, path: Path, *, part_kind: str = "tx") -> None:
        self._f = f
        self.path = path
        self._part_kind = part_kind
        self._part_file: h5py.File | None = None
        self._part_name = ""

    @property
    def num_samples(self) -> int:
        return int(self._get("samples/id").shape[0])

    def _get(self, path: str) -> Any:
        """An object of the store, following links read-only (a reader in this process may hold a
        part open read-only; HDF5 refuses to open it again for writing)."""
        obj = self._f.get(path, elink_mode="r")
        if obj is None:
            raise KeyError(path)
        return obj

    def _has(self, group: str, name: str) -> bool:
        """Whether the root's ``group`` has a member ``name`` (without opening its part)."""
        return self._f[group].get(name, getlink=True) is not None

    # -- the part this write adds ----------------------------------------------------
    def _part(self) -> h5py.File:
        if self._part_file is None:
            folder = parts_dir(self.path)
            if not folder.is_dir():
                folder.mkdir()
                keep_mode(folder, self.path if self.path.exists() else None, folder=True)
            name = f"{self._part_kind}-{uuid.uuid4().hex[:16]}.h5"
            self._part_file = h5py.File(str(folder / name), "w", **_RDCC)
            self._part_name = f"{folder.name}/{name}"
            keep_mode(folder / name, self.path if self.path.exists() else None)
        return self._part_file

    def _part_group(self, path: str) -> h5py.Group:
        """A new, empty group at ``path`` in this write's part (replacing one made earlier in it)."""
        part = self._part()
        if path in part:
            del part[path]
        return part.require_group(path)

    def _link(self, path: str) -> None:
        """Point the root's ``path`` at the object of the same path in this write's part."""
        self._part()
        if self._f.get(path, getlink=True) is not None:
            del self._f[path]
        self._f[path] = h5py.ExternalLink(self._part_name, "/" + path)

    def _finish_part(self) -> None:
        """Flush, close and fsync this write's part (before the root that links to it is committed)."""
        if self._part_file is not None:
            filename = self._part_file.filename
            self._part_file.close()
            self._part_file = None
            _fsync_path(Path(filename))
            _fsync_path(Path(filename).parent, directory=True)

    def _abort(self) -> None:
        if self._part_file is not None:
            filename = self._part_file.filename
            with contextlib.suppress(Exception):
                self._part_file.close()
            self._part_file = None
            with contextlib.suppress(OSError):
                os.unlink(filename)

    def _materialize(self) -> None:
        """Copy every linked object into this write's part and relink to it: appending samples
        must grow every per-sample array, and parts are never changed.  Costs a copy of the store."""
        part = self._part()
        for key, link in _read_links(self._f, self.path).items():
            if link.filename == self._part_name:
                continue
            parent, _, leaf = key.rpartition("/")
            target = part.require_group(parent) if parent else part
            _copy_checked(self._get(key), target, leaf)
            self._link(key)

    # -- samples ---------------------------------------------------------------------
    def append_samples(self, records: Sequence[SampleRecord]) -> None:
        """Append samples (ids must be new; class count must match the store)."""
        if not records:
            return
        self._materialize()
        f = self._part()  # holds every per-sample array now
        n0 = self.num_samples
        n1 = n0 + len(records)
        C = int(self._f["classes/names"].shape[0]) - 1
        s = f["samples"]
        for name in ("height", "width", "strong", "has_tags"):
            s[name].resize((n1,))
        s["tags"].resize((n1, C))
        _append_strings(s, "id", n0, [r.id for r in records])
        _append_strings(s, "split", n0, [r.split for r in records])
        s["height"][n0:n1] = [r.height for r in records]
        s["width"][n0:n1] = [r.width for r in records]
        s["strong"][n0:n1] = [int(r.strong) for r in records]
        s["has_tags"][n0:n1] = [int(r.tags is not None) for r in records]
        tags = np.zeros((len(records), C), dtype=np.uint8)
        for j, r in enumerate(records):
            if r.tags is not None:
                tags[j] = np.asarray(r.tags, dtype=bool)
        s["tags"][n0:n1] = tags

        images = f["images"]
        _append_ragged(images["bytes"], images["offsets"], [np.frombuffer(r.image_bytes, np.uint8) for r in records])
        _append_strings(images, "format", n0, [r.image_format for r in records])

        for kind in MAP_KINDS:
            g = f[f"maps/{kind}"]
            arrays = [r.map(kind) for r in records]
            _append_ragged(f[_data_path(kind)], g["offsets"], [r.encoded(kind) for r in records])
            if kind in LABEL_KINDS:
                hist = np.zeros((len(records), C + 2), dtype=np.uint32)
                for j, a in enumerate(arrays):
                    if a is not None:
                        counts = np.bincount(a.ravel(), minlength=256)
                        hist[j, : C + 1] = counts[: C + 1]
                        hist[j, C + 1] = counts[IGNORE_LABEL]
                g["histogram"].resize((n1, C + 2))
                g["histogram"][n0:n1] = hist

        for name, g in f["maps"].items():  # computed maps (reference masks, proxy sets): none for new samples
            if name not in MAP_KINDS:
                g["offsets"].resize((n1 + 1,))
                g["offsets"][n0 + 1 :] = g["offsets"][n0]
                if "histogram" in g:
                    g["histogram"].resize((n1, g["histogram"].shape[1]))
                    g["histogram"][n0:n1] = 0
        for group in ("scores", "selections"):  # existing columns grow, NaN / 0 for new samples
            for ds in f.get(group, {}).values():
                ds.resize((n1,))
                ds[n0:n1] = np.nan if group == "scores" else 0.0

    # -- scores ----------------------------------------------------------------------
    def put_scores(self, columns: dict[str, np.ndarray], *, config: dict[str, Any], command: str,
                   overwrite: bool = False) -> None:
        """Write complete score columns, each ``(N,)`` float, NaN for "not computed"."""
        for name, values in columns.items():
            values = np.asarray(values, dtype=np.float32)
            if values.shape != (self.num_samples,):
                raise StoreError(f"score {name!r}: expected shape ({self.num_samples},), got {values.shape}")
            self._new_column("scores", name, values, overwrite=overwrite,
                             attrs={"config": json.dumps(config, sort_keys=True, default=str), "command": command})

    # -- computed binary maps ----------------------------------------------------------
    def put_bit_maps(self, name: str, packed: Iterable[np.ndarray | None], *, config: dict[str, Any],
                     command: str, overwrite: bool = False) -> None:
        """Write per-sample binary masks (e.g. reference masks H) as map kind ``name``.

        packed: one entry per sample in order, ``np.packbits`` of the row-major ``(H, W)`` mask,
        or None for no mask.  Stored deflate-compressed with encoding ``bits``.
        """
        check_column_name(name)
        if name in MAP_KINDS:
            raise StoreError(f"map kind {name!r} is reserved for imported maps; choose another name")
        if self._has("maps", name) and not overwrite:
            raise StoreError(f"{self.path}: maps {name!r} exist already; pass overwrite to replace them",
                             param="overwrite")
        n = self.num_samples
        g = self._part_group(f"maps/{name}")
        g.attrs["encoding"] = "bits"
        g.attrs["config"] = json.dumps(config, sort_keys=True, default=str)
        g.attrs["command"] = command
        g.attrs["created"] = utc_now()
        data = _create(g, "bits", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_PIXEL_CHUNK,),
                       compression="gzip", compression_opts=_DEFLATE)
        offsets = _create(g, "offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
        batch: list[np.ndarray | None] = []
        count = 0
        for item in packed:
            batch.append(item)
            if len(batch) == 256:
                _append_ragged(data, offsets, batch)
                count += len(batch)
                batch = []
        _append_ragged(data, offsets, batch)
        count += len(batch)
        if count != n:
            raise StoreError(f"maps {name!r}: expected {n} entries, got {count}")
        self._link(f"maps/{name}")

    # -- proxy sets ------------------------------------------------------------------
    def put_label_maps(self, name: str, maps: Iterable[np.ndarray | None], *, config: dict[str, Any],
                       command: str, overwrite: bool = False) -> None:
        """Write a named proxy set: map kind ``name`` with ``role = "proxy"``.

        maps: one entry per sample in sample order, an ``(H_i, W_i)`` label map with values
        0..C or 255 (ignore), or None for no map.  Stored as the imported ``proxy`` maps are:
        deflated uint8 pixels, offsets and a per-class ``histogram`` ``(N, C + 2)``.
        """
        check_proxy_set_name(name)
        groups = {k: self._get(f"maps/{k}") for k in self._f["maps"]}
        order = 1 + max((int(g.attrs.get("order", 0)) for g in groups.values()
                         if _attr_str(g, "role", "") == "proxy"), default=0)
        if name in groups:
            if _attr_str(groups[name], "role", "") != "proxy":
                raise StoreError(f"{self.path}: maps {name!r} exist already and are not proxies; choose another name",
                                 param="name")
            if not overwrite:
                raise StoreError(f"{self.path}: the set of proxies {name!r} exists already; pass overwrite to "
                                 "replace it or choose another name", param="overwrite")
        sizes = np.stack([self._get("samples/height")[:], self._get("samples/width")[:]], axis=1).astype(np.int64)
        ids = self._get("samples/id").asstr()[:]
        C = int(self._f["classes/names"].shape[0]) - 1
        # built in this write's part and linked only when complete: a refused map leaves the old set
        g = self._part_group(f"maps/{name}")
        data = _create(g, "pixels", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_PIXEL_CHUNK,),
                       compression="gzip", compression_opts=_DEFLATE)
        offsets = _create(g, "offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
        hist = np.zeros((len(sizes), C + 2), dtype=np.uint32)
        batch: list[np.ndarray | None] = []
        count = 0
        for item in maps:
            if count >= len(sizes):
                raise StoreError(f"proxies {name!r}: expected {len(sizes)} maps (one per sample), got more")
            if item is not None:
                item = _check_label_map(name, item, count, ids[count], (int(sizes[count, 0]), int(sizes[count, 1])), C)
                counts = np.bincount(item.ravel(), minlength=256)
                hist[count, : C + 1] = counts[: C + 1]
                hist[count, C + 1] = counts[IGNORE_LABEL]
            batch.append(item)
            count += 1
            if len(batch) == 256:
                _append_ragged(data, offsets, batch)
                batch = []
        _append_ragged(data, offsets, batch)
        if count != len(sizes):
            raise StoreError(f"proxies {name!r}: expected {len(sizes)} maps (one per sample), got {count}")
        _create(g, "histogram", data=hist, maxshape=(None, C + 2), chunks=(4096, C + 2), **_HIST_FILTERS)
        g.attrs["encoding"] = "pixels"
        g.attrs["role"] = "proxy"
        g.attrs["order"] = order
        g.attrs["config"] = json.dumps(config, sort_keys=True, default=str)
        g.attrs["command"] = command
        g.attrs["created"] = utc_now()
        g.attrs["uid"] = uuid.uuid4().hex  # tells two writes of the set apart (see proxy_stamp)
        g.attrs["salcurate_version"] = __version__
        if name in groups:
            self._drop_derived(name)
        self._link(f"maps/{name}")

    def _drop_derived(self, proxy: str) -> list[str]:
        """Delete what was computed from proxy set ``proxy`` (its score columns, reference maps and
        selections), so that replacing the set never leaves scores of the old proxies behind."""
        f = self._f
        dropped = [f"scores/{n}" for n in f["scores"] if column_proxy(n) == proxy]
        dropped += [f"maps/{n}" for n in f["maps"]
                    if column_proxy(n) == proxy and _attr_str(self._get(f"maps/{n}"), "role", "") != "proxy"]
        for n in f["selections"]:
            rule = json.loads(_attr_str(self._get(f"selections/{n}"), "rule", "{}") or "{}")
            if rule.get("proxy") == proxy:
                dropped.append(f"selections/{n}")
        for key in dropped:
            del f[key]
        if dropped:
            log.warning("replaced the set of proxies %r: removed what was computed from the old one (%s)", proxy,
                        ", ".join(dropped))
        return dropped

    # -- selections ------------------------------------------------------------------
    def put_selection(self, name: str, weights: np.ndarray, *, rule: dict[str, Any], command: str,
                      overwrite: bool = False) -> None:
        """Write a named selection: ``(N,)`` weights (Eq. 9) plus the rule that made them."""
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (self.num_samples,):
            raise StoreError(f"selection {name!r}: expected shape ({self.num_samples},), got {weights.shape}")
        self._new_column("selections", name, weights, overwrite=overwrite,
                         attrs={"rule": json.dumps(rule, sort_keys=True, default=str), "command": command})

    def _new_column(self, group: str, name: str, values: np.ndarray, *, overwrite: bool,
                    attrs: dict[str, str]) -> None:
        check_column_name(name)
        if self._has(group, name) and not overwrite:
            what = "score column" if group == "scores" else "selection"
            raise StoreError(f"{self.path}: {what} {name!r} exists already; pass overwrite to replace it "
                             "or choose another name", param="overwrite")
        g = self._part().require_group(group)
        if name in g:
            del g[name]
        ds = _create(g, name, data=values, maxshape=(None,), chunks=(max(1, min(len(values), 1 << 16)),))
        for k, v in attrs.items():
            ds.attrs[k] = v
        ds.attrs["created"] = utc_now()
        ds.attrs["salcurate_version"] = __version__
        self._link(f"{group}/{name}")


def check_column_name(name: str) -> None:
    """A score, selection or map column name: printable, no ``/``, not starting with ``.``.

    ``:`` names a proxy set's column (``sc:cam``, see :func:`proxy_column`), ``@`` a config hash.
    """
    if not name or "/" in name or name.startswith(".") or not name.isprintable():
        raise StoreError(f"invalid column name {name!r}: use letters, digits, '-', '_', '.', ':' and '@' "
                         "without '/'")


def _check_label_map(name: str, labels: np.ndarray, i: int, sample_id: str, size: tuple[int, int],
                     num_classes: int) -> np.ndarray:
    """One map of a proxy set, checked against its sample's size and the class count: ``(H, W)`` uint8."""
    labels = np.asarray(labels)
    where = f"proxies {name!r}, sample {i} ({sample_id!r})"
    if labels.shape != size:
        raise InputError(f"{where}: expected a label map of shape {size} (the image's height, width), "
                         f"got {labels.shape}")
    if labels.dtype.kind not in "biu":
        raise InputError(f"{where}: expected integer class labels, got dtype {labels.dtype}")
    bad = (labels < 0) | ((labels > num_classes) & (labels != IGNORE_LABEL))
    if bad.any():
        values = sorted({int(v) for v in np.unique(labels[bad])[:5]})
        raise InputError(f"{where}: label values must be 0..{num_classes} or {IGNORE_LABEL} "
                         f"(the store has {num_classes} classes), got {values}")
    return labels.astype(np.uint8, copy=False)


def _fixed_str(length: int) -> np.dtype:
    """A fixed-length UTF-8 string type: read as one block (variable-length strings cost a heap
    lookup each) and, unlike those, checksummed."""
    return h5py.string_dtype("utf-8", length)


def _read_strings(ds: h5py.Dataset) -> list[str]:
    """A string dataset's values (fixed- or variable-length) as Python strings."""
    if ds.dtype.kind == "S":
        raw = ds[:]
        if not raw.size:
            return []
        values, inverse = np.unique(raw, return_inverse=True)  # few distinct splits, formats: decode each once
        if len(values) <= len(raw) // 4:
            return np.asarray([v.decode("utf-8") for v in values], dtype=object)[inverse].tolist()
        return np.char.decode(raw, "utf-8").tolist()
    return ds.asstr()[:].tolist()


def _append_strings(group: h5py.Group, name: str, n0: int, values: Sequence[str]) -> None:
    """Write ``values`` at rows ``n0:`` of a string dataset, widening a fixed-length one (by
    rewriting it; it is small) when a value is longer than it holds."""
    ds = group[name]
    encoded = [v.encode("utf-8") for v in values]
    if ds.dtype.kind == "S":
        need = max((len(e) for e in encoded), default=0)
        if need > ds.dtype.itemsize:
            old, attrs, width = ds[:n0], dict(ds.attrs), max(need, 2 * ds.dtype.itemsize)
            del group[name]
            ds = _create(group, name, shape=(n0,), maxshape=(None,), dtype=_fixed_str(width), chunks=(4096,))
            ds[:] = old
            for k, v in attrs.items():
                ds.attrs[k] = v
        ds.resize((n0 + len(values),))
        if values:
            ds[n0:] = np.array(encoded, dtype=_fixed_str(ds.dtype.itemsize))
        return
    ds.resize((n0 + len(values),))
    ds[n0:] = list(values)


def _append_ragged(data: h5py.Dataset, offsets: h5py.Dataset, arrays: Sequence[np.ndarray | None]) -> None:
    sizes = np.array([0 if a is None else a.size for a in arrays], dtype=np.uint64)
    n0 = offsets.shape[0]
    start = int(offsets[n0 - 1])
    total = int(sizes.sum())
    if total:
        flat = np.concatenate([a.reshape(-1) for a in arrays if a is not None and a.size])
        data.resize((start + total,))
        data[start : start + total] = flat
    offsets.resize((n0 + len(arrays),))
    offsets[n0:] = start + np.cumsum(sizes)


class StoreTransaction(_Writable):
    """A store being changed; committed by :func:`transaction` on success."""


def _init_root(f: h5py.File, class_names: Sequence[str], *, created: str | None = None) -> None:
    """The root's own content: attributes, class names, empty link groups and run log."""
    f.attrs["salcurate_format"] = FORMAT_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["salcurate_version"] = __version__
    f.attrs["created"] = created or utc_now()
    f.create_dataset("classes/names", data=list(class_names), dtype=_STR)
    for group in _LINK_GROUPS:
        f.create_group(group)
    f.create_dataset("log/entries", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(256,))


def _init_layout(tx: _Writable, class_names: Sequence[str]) -> None:
    """A new store: the root and a base part with empty samples, images and imported maps."""
    _init_root(tx._f, class_names)
    C = len(class_names) - 1
    part = tx._part()
    s = part.create_group("samples")
    for name, dtype in (("id", _fixed_str(16)), ("split", _fixed_str(8)), ("height", np.uint32),
                        ("width", np.uint32), ("strong", np.uint8), ("has_tags", np.uint8)):
        _create(s, name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
    _create(s, "tags", shape=(0, C), maxshape=(None, C), dtype=np.uint8, chunks=(4096, max(C, 1)))
    img = part.create_group("images")
    _create(img, "bytes", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_BYTES_CHUNK,))
    _create(img, "offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
    _create(img, "format", shape=(0,), maxshape=(None,), dtype=_fixed_str(4), chunks=(4096,))
    for kind in MAP_KINDS:
        g = part.create_group(f"maps/{kind}")
        if kind in PNG_KINDS:
            g.attrs["encoding"] = "png"
            _create(g, "png", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_BYTES_CHUNK,))
        else:
            g.attrs["encoding"] = "pixels"
            _create(g, "pixels", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_PIXEL_CHUNK,),
                    compression="gzip", compression_opts=_DEFLATE)
        _create(g, "offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
        if kind in LABEL_KINDS:
            _create(g, "histogram", shape=(0, C + 2), maxshape=(None, C + 2), dtype=np.uint32, chunks=(4096, C + 2),
                    **_HIST_FILTERS)
    for key in ("samples", "images", *(f"maps/{k}" for k in MAP_KINDS)):
        tx._link(key)


def _copy_root(old: h5py.File, new: h5py.File, *, rename: dict[str, str] | None = None) -> None:
    """A fresh copy of a v2 root (attributes, class names, log, links): rewriting it whole keeps it
    as small as its content, whatever was replaced before.  ``rename`` maps part file names."""
    for k, v in old.attrs.items():
        new.attrs[k] = v
    new.create_dataset("classes/names", data=old["classes/names"][:], dtype=_STR)
    entries = old["log/entries"][:]
    new.create_dataset("log/entries", data=entries, maxshape=(None,), dtype=_STR, chunks=(256,))
    for group in _LINK_GROUPS:
        new.create_group(group)
    for key, link in _read_links(old, Path(old.filename)).items():
        new[key] = h5py.ExternalLink((rename or {}).get(link.filename, link.filename), link.path)


_BLOCK = 32 << 20  # bytes per read while copying a dataset


def _copy_checked(src: h5py.Group | h5py.Dataset, dest: h5py.Group, name: str) -> None:
    """Copy a group or dataset into ``dest[name]``, every dataset with the fletcher32 checksum
    (v1 stores have none), in blocks so that memory stays flat."""
    if isinstance(src, h5py.Group):
        g = dest.create_group(name)
        for k, v in src.attrs.items():
            g.attrs[k] = v
        for child in src:
            _copy_checked(src[child], g, child)
        return
    rows = max(1, _BLOCK // max(1, src.dtype.itemsize * int(np.prod(src.shape[1:], dtype=np.int64))))
    chunks = src.chunks or (True if src.ndim else None)
    kwargs: dict[str, Any] = dict(shape=src.shape, maxshape=src.maxshape or src.shape, dtype=src.dtype,
                                  chunks=chunks, compression=src.compression, compression_opts=src.compression_opts)
    vlen = h5py.check_string_dtype(src.dtype)
    if src.ndim == 0:
        ds = dest.create_dataset(name, data=src[()], dtype=src.dtype)
    elif vlen is not None and vlen.length is None and src.ndim == 1:  # v1's variable-length strings: fixed
        encoded = [v.encode("utf-8") for v in _read_strings(src)]
        width = max((len(e) for e in encoded), default=1) or 1
        ds = _create(dest, name, shape=src.shape, maxshape=(None,), dtype=_fixed_str(width), chunks=True)
        if encoded:
            ds[:] = np.array(encoded, dtype=_fixed_str(width))
    else:
        ds = _create(dest, name, **kwargs)
        for lo in range(0, src.shape[0], rows):
            ds[lo : lo + rows] = src[lo : lo + rows]
    for k, v in src.attrs.items():
        ds.attrs[k] = v


def _append_log(f: h5py.File, entry: LogEntry) -> None:
    ds = f["log/entries"]
    n = ds.shape[0]
    ds.resize((n + 1,))
    ds[n] = entry.to_json()
    f.attrs["salcurate_version"] = __version__


def _finish_log(f: h5py.File, command: str, config: dict[str, Any], started: float) -> None:
    now = time.time()
    _append_log(f, LogEntry(
        command=command, config=config,
        started=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        finished=utc_now(), duration_s=round(now - started, 3), salcurate_version=__version__,
    ))


@contextlib.contextmanager
def create_store(dest: str | os.PathLike[str], class_names: Sequence[str], *, command: str,
                 config: dict[str, Any], overwrite: bool = False,
                 started: float | None = None) -> Iterator[_Writable]:
    """Build a new store at ``dest``: its data in a new part, then its root renamed over ``dest``.

    On any exception the new part and root are removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    started = time.time() if started is None else started
    if dest.is_dir():
        raise StoreError(f"{dest}: expected a store file path, got a folder; give a file name inside it")
    if dest.exists() and not overwrite:
        raise StoreError(f"{dest}: exists already; pass overwrite to replace it or append to add samples",
                         param=("overwrite", "append"))
    if len(class_names) < 2:
        raise StoreError(f"expected background plus at least one class name, got {list(class_names)}")
    if not dest.parent.is_dir():
        raise StoreError(f"{dest}: the folder {dest.parent} does not exist; create it first")
    if dest.exists():
        _check_writable(dest)
    elif not os.access(dest.parent, os.W_OK | os.X_OK):
        raise StoreError(f"{dest}: cannot write in the folder {dest.parent} (permission denied); "
                         "choose a folder you may write")
    with _write_lock(dest):
        partial = _partial_path(dest)
        writer: _Writable | None = None
        try:
            with h5py.File(str(partial), "w", **_RDCC) as f:
                writer = _Writable(f, dest, part_kind="base")
                _init_layout(writer, class_names)
                yield writer
                _finish_log(f, command, config, started)
                writer._finish_part()
            _commit(partial, dest)
            writer = None
            _collect_garbage(dest)
        finally:
            if writer is not None:
                writer._abort()
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()


@contextlib.contextmanager
def transaction(path: str | os.PathLike[str], *, command: str, config: dict[str, Any],
                started: float | None = None) -> Iterator[StoreTransaction]:
    """Change a store atomically: all of the block's writes land together, or none do.

    The new data goes into one new part file; the root is rewritten (it is small) and renamed
    over the old one.  A v1 store is migrated first (see :func:`migrate`).  The run log gets one
    entry for ``command`` with its resolved ``config``.
    """
    path = Path(path)
    _check_store_file(path)
    _check_writable(path)
    with _write_lock(path):
        with _open_h5(path, "r") as f:
            version = _check_schema(f, path)
        if version < 2:
            _migrate_locked(path)
        with transaction_locked(path, command=command, config=config, started=started) as tx:
            yield tx


@contextlib.contextmanager
def transaction_locked(path: Path, *, command: str, config: dict[str, Any],
                       started: float | None = None) -> Iterator[StoreTransaction]:
    """The body of :func:`transaction` for a v2 store whose write lock the caller holds."""
    started = time.time() if started is None else started
    _collect_garbage(path)  # parts of killed writers
    partial = _partial_path(path)
    tx: StoreTransaction | None = None
    try:
        with _open_h5(path, "r") as old, h5py.File(str(partial), "w", **_RDCC) as f:
            _copy_root(old, f)
        with h5py.File(str(partial), "r+", **_RDCC) as f:
            tx = StoreTransaction(f, path)
            yield tx
            _finish_log(f, command, config, started)
            tx._finish_part()
        _commit(partial, path)
        tx = None
        _collect_garbage(path)  # parts of replaced columns
    finally:
        if tx is not None:
            tx._abort()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


# --------------------------------------------------------------------------------------
# Migration (v1 → v2) and compaction
# --------------------------------------------------------------------------------------
def _backup_path(path: Path) -> Path:
    backup = path.with_name(f"{path.name}.v1-backup")
    k = 1
    while backup.exists():
        k += 1
        backup = path.with_name(f"{path.name}.v1-backup{k}")
    return backup


def _migrate_locked(path: Path) -> Path:
    """Rewrite a v1 store as v2 (the caller holds the lock); the v1 file stays as a backup."""
    started = time.time()
    partial = _partial_path(path)
    writer: _Writable | None = None
    small: _Writable | None = None
    try:
        with _open_h5(path, "r") as old, h5py.File(str(partial), "w", **_RDCC) as f:
            names = old["classes/names"].asstr()[:]
            created = old.attrs.get("created")
            _init_root(f, names, created=created.decode() if isinstance(created, bytes) else created)
            for k, v in old.attrs.items():
                if k not in ("schema_version", "salcurate_version"):
                    f.attrs[k] = v
            entries = old["log/entries"][:]
            f["log/entries"].resize((len(entries),))
            f["log/entries"][:] = entries
            writer = _Writable(f, path, part_kind="base")
            part = writer._part()
            for top in ("samples", "images"):
                _copy_checked(old[top], part, top)
                writer._link(top)
            maps = part.create_group("maps")
            for kind in old["maps"]:
                _copy_checked(old[f"maps/{kind}"], maps, kind)
                writer._link(f"maps/{kind}")
            small = _Writable(f, path, part_kind="tx")
            for group in ("scores", "selections"):
                for name in old.get(group, {}):
                    _copy_checked(old[f"{group}/{name}"], small._part().require_group(group), name)
                    small._link(f"{group}/{name}")
            backup = _backup_path(path)
            _finish_log(f, "migrate", {"from_schema": int(old.attrs.get("schema_version", 1)), "to_schema": 2,
                                       "backup": backup.name}, started)
            writer._finish_part()
            small._finish_part()
        try:  # the v1 file itself becomes the backup: no copy
            os.link(path, backup)
        except OSError:
            shutil.copy2(path, backup)
        _commit(partial, path)
        writer = small = None
        log.warning("migrated %s to store schema v2; the v1 file is kept as %s (delete it when you no longer "
                    "need it)", path, backup)
        return backup
    finally:
        for w in (writer, small):
            if w is not None:
                w._abort()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def migrate(path: str | os.PathLike[str]) -> Path | None:
    """Migrate a v1 store to v2 in place; returns the v1 backup's path, or None when already v2."""
    path = Path(path)
    _check_store_file(path)
    _check_writable(path)
    with _write_lock(path):
        with _open_h5(path, "r") as f:
            version = _check_schema(f, path)
        return _migrate_locked(path) if version < 2 else None


def store_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a store consists of: its root and the part files it links to."""
    path = Path(path)
    with _open_h5(path, "r") as root:
        links = _read_links(root, path)
    return [path, *sorted({path.parent / link.filename for link in links.values()})]


def copy_store(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy a store (its root and the parts it uses) to ``dest``, whose parts go to ``dest``'s own
    folder.  Parts never change, so they are hard-linked where the file system allows (no copy)."""
    src, dest = Path(src), Path(dest)
    _check_store_file(src)
    if dest.exists():
        raise StoreError(f"{dest}: exists already; choose another destination or remove it")
    if not dest.parent.is_dir():
        raise StoreError(f"{dest}: its folder {dest.parent} does not exist; create it first or choose another "
                         "destination")
    with _open_h5(src, "r") as root:
        version = _check_schema(root, src)
        links = _read_links(root, src)
    if version < 2 or not links:
        shutil.copy2(src, dest)
        return dest
    folder = parts_dir(dest)
    folder.mkdir(exist_ok=True)
    renamed: dict[str, str] = {}
    for filename in sorted({link.filename for link in links.values()}):
        target = folder / Path(filename).name
        renamed[filename] = f"{folder.name}/{target.name}"
        if not target.exists():
            try:
                os.link(src.parent / filename, target)
            except OSError:
                shutil.copy2(src.parent / filename, target)
    partial = _partial_path(dest)
    try:
        with _open_h5(src, "r") as old, h5py.File(str(partial), "w") as new:
            _copy_root(old, new, rename=renamed)
        keep_mode(partial, src)
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return dest


def remove_store(path: str | os.PathLike[str]) -> None:
    """Delete a store: its root, then its part folder (a missing store is no error)."""
    path = Path(path)
    for leftover in (path, path.with_name(f".{path.name}.lock")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    shutil.rmtree(parts_dir(path), ignore_errors=True)


def compact(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Gather every score column and selection into one part, rewrite the root and delete the
    part files nothing refers to.  Returns the store's size in bytes before and after."""
    path = Path(path)
    _check_store_file(path)
    _check_writable(path)

    def size() -> int:
        folder = parts_dir(path)
        return path.stat().st_size + (sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0)

    with _write_lock(path):
        with _open_h5(path, "r") as f:
            version = _check_schema(f, path)
        before = size()
        if version < 2:
            _migrate_locked(path)
        with transaction_locked(path, command="compact", config={}) as tx:
            for key in _read_links(tx._f, path):
                if key.partition("/")[0] in ("scores", "selections"):
                    group = tx._part().require_group(key.partition("/")[0])
                    _copy_checked(tx._f[key], group, key.partition("/")[2])
                    tx._link(key)
        return before, size()


# --------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Damage:
    """One thing ``check`` found wrong: a sample's data (``sample`` set) or the store's own."""

    what: str
    sample: str | None = None
    index: int | None = None


@dataclasses.dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` found."""

    schema_version: int | None  # None: the store could not be opened
    num_samples: int
    files: list[Path]  # the root and the part files it links to
    damage: list[Damage]


def check_store(path: str | os.PathLike[str], *, decode_images: bool = False,
                start: Callable[[int], None] | None = None,
                advance: Callable[[int], None] | None = None) -> StoreCheck:
    """Read every byte of a store and list what is damaged: its root, missing part files, columns,
    and each sample whose image or maps fail their checksum or do not decode.

    decode_images: also decode every image (checksums catch damaged bytes in v2 stores; v1 stores
    have none, so only decoding finds them).  start: called once with the number of samples;
    advance: with the number of samples checked since the last call.
    """
    path = Path(path)
    _check_store_file(path)
    try:
        files = store_files(path)
    except StoreError as exc:
        return StoreCheck(None, 0, [path], [Damage(str(exc).removeprefix(f"{path}: "))])
    missing = [Damage(f"part file {f.name} is missing") for f in files if not f.exists()]
    if missing:
        return StoreCheck(None, 0, files, missing)
    try:
        store = MaskStore(path)
    except StoreError as exc:
        return StoreCheck(None, 0, files, [Damage(str(exc).removeprefix(f"{path}: "))])
    damage: list[Damage] = []
    with store:
        columns = ["classes/names", "log/entries",
                   *(f"maps/{k}/histogram" for k in store.map_names() if k in LABEL_KINDS or k in store._proxy_sets),
                   *(f"scores/{n}" for n in store.score_names()),
                   *(f"selections/{n}" for n in store.selection_names())]
        for key in columns:
            try:
                store._obj(key)[:]
            except (OSError, KeyError, ValueError) as exc:
                damage.append(Damage(f"{key} cannot be read ({_short(exc)})"))
        read_image = store.image if decode_images else store.image_bytes
        kinds = store.map_names()
        if start is not None:
            start(len(store))
        for i, sample_id in enumerate(store.ids):
            for read in (read_image, *(functools.partial(store.map, kind) for kind in kinds)):
                try:
                    read(i)
                except StoreError as exc:
                    damage.append(Damage(getattr(exc, "damage", str(exc)), sample_id, i))
            if advance is not None and (i % 256 == 255 or i == len(store) - 1):
                advance(i % 256 + 1)
        return StoreCheck(store.schema_version, len(store), files, damage)
