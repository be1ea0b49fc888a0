"""The mask store: one HDF5 file that holds a dataset and everything computed on it.

This is the only module of salcurate that imports h5py.  The layout is documented in
``docs/store-format.md`` so that the file can be read with plain h5py or ``h5dump``.

Durability model (nothing is lost, ``kill -9`` included):

* A new store is built beside its destination (``.NAME.PID.partial``) and renamed over it
  only when complete.
* Every later *structural* write (new score columns, selections, appended samples, run log
  entries) is a :func:`transaction`: the store is copied beside itself, the copy is changed,
  flushed, fsynced and atomically renamed over the original.  A reader never sees a half-made
  change, and a killed writer leaves the original untouched.
* Long resumable computations keep their partial results outside the store, in a work area
  (``salcurate.data.workarea``), and commit complete results in one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
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
SCHEMA_VERSION = 1
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
    version = int(f.attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        writer = f.attrs.get("salcurate_version", "a newer version")
        raise StoreError(
            f"{path}: store schema v{version} (written by salcurate {writer}) is newer than "
            f"this salcurate {__version__} reads (v{SCHEMA_VERSION}); upgrade salcurate"
        )
    if version < 1:
        raise StoreError(f"{path}: unknown store schema version {version}; re-import the dataset")
    return version


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
        self._f = _open_h5(self.path, "r")
        try:
            self.schema_version = _check_schema(self._f, self.path)
            try:
                self._load()
            except (KeyError, ValueError, OSError) as exc:
                raise StoreError(
                    f"{self.path}: the store's layout is damaged ({exc}); re-import the dataset or restore a copy"
                ) from None
        except Exception:
            self._f.close()
            raise

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> MaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> None:
        f = self._f
        s = f["samples"]
        self.class_names: tuple[str, ...] = tuple(f["classes/names"].asstr()[:])
        self.ids: tuple[str, ...] = tuple(s["id"].asstr()[:])
        self.splits: np.ndarray = np.asarray(s["split"].asstr()[:], dtype=object)
        self.heights: np.ndarray = s["height"][:].astype(np.int64)
        self.widths: np.ndarray = s["width"][:].astype(np.int64)
        self.strong: np.ndarray = s["strong"][:].astype(bool)
        self.tags: np.ndarray = s["tags"][:].astype(bool)
        self.has_tags: np.ndarray = s["has_tags"][:].astype(bool)
        self._image_offsets = f["images/offsets"][:]
        self.image_formats: tuple[str, ...] = tuple(f["images/format"].asstr()[:])
        self._map_offsets = {k: f[f"maps/{k}/offsets"][:] for k in f["maps"]}
        self._map_encoding = {k: _attr_str(f[f"maps/{k}"], "encoding", "pixels") for k in f["maps"]}
        sets = [k for k in f["maps"] if k != IMPORTED_PROXY and _attr_str(f[f"maps/{k}"], "role", "") == "proxy"]
        self._proxy_sets: tuple[str, ...] = tuple(sorted(sets, key=lambda k: _creation_key(f[f"maps/{k}"], k)))
        self._index = {sample_id: i for i, sample_id in enumerate(self.ids)}
        self._datasets: dict[str, h5py.Dataset] = {}

    def _ds(self, name: str) -> h5py.Dataset:
        """A dataset by path, looked up once (path resolution costs more than a small read)."""
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets[name] = self._f[name]
        return ds

    # -- store level -----------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

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
        return self._ds("images/bytes")[lo:hi].tobytes()

    def image(self, i: int) -> np.ndarray:
        """The decoded image: ``(H, W, 3)`` uint8 RGB."""
        from salcurate.imageio import decode_image

        return decode_image(self.image_bytes(i))

    # -- maps ------------------------------------------------------------------------
    def map_names(self) -> list[str]:
        """The kinds of per-sample maps in the store (``proxy``, ``gt``, ``saliency``, ...)."""
        return sorted(self._map_offsets)

    def map_meta(self, kind: str) -> dict[str, Any]:
        self._check_kind(kind)
        return _attrs_json(self._f[f"maps/{kind}"])

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
        order = np.arange(len(self.ids)) if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
        pixels = self._ds(self._data_path(kind))
        pos = 0
        while pos < len(order):
            first = int(order[pos])
            end = pos
            while end < len(order) and off[int(order[end]) + 1] - off[first] <= block_bytes:
                end += 1
            end = max(end, pos + 1)
            lo, hi = int(off[first]), int(off[int(order[end - 1]) + 1])
            block = pixels[lo:hi] if hi > lo else np.empty(0, np.uint8)
            for i in order[pos:end]:
                i = int(i)
                a, b = int(off[i]) - lo, int(off[i + 1]) - lo
                yield i, (self._decode_map(kind, i, block[a:b]) if b > a else None)
            pos = end

    def class_histogram(self, kind: str) -> np.ndarray:
        """``(N, C + 2)`` int64 pixel counts per class; the last column counts ignore (255) pixels.

        Kept for the label maps: ``proxy``, ``gt`` and every proxy set.
        """
        if kind not in LABEL_KINDS and kind not in self._proxy_sets:
            have = ", ".join((*LABEL_KINDS, *self._proxy_sets))
            raise StoreError(f"class histograms exist for {have}, not {kind!r}")
        hist = self._f[f"maps/{kind}/histogram"][:].astype(np.int64)
        if len(hist) < self.num_samples:  # samples appended by a salcurate that did not grow this set's histogram
            hist = np.concatenate([hist, np.zeros((self.num_samples - len(hist), hist.shape[1]), np.int64)])
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
        return self._f[f"scores/{name}"][:]

    def score_meta(self, name: str) -> dict[str, Any]:
        self.score(name)  # existence check with its message
        return _attrs_json(self._f[f"scores/{name}"])

    def selection_names(self) -> list[str]:
        return sorted(self._f["selections"].keys())

    def selection(self, name: str) -> np.ndarray:
        """``(N,)`` float32 weight per sample (Eq. 9: 1 kept, 0 dropped)."""
        if name not in self._f["selections"]:
            have = ", ".join(self.selection_names()) or "none"
            raise StoreError(f"{self.path}: no selection {name!r} (the store has: {have}); "
                             "make one with `salcurate select`")
        return self._f[f"selections/{name}"][:]

    def selection_meta(self, name: str) -> dict[str, Any]:
        self.selection(name)
        return _attrs_json(self._f[f"selections/{name}"])

    def run_log(self) -> list[dict[str, Any]]:
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
# Locking and atomic replacement
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


def _commit(partial: Path, dest: Path) -> None:
    _fsync_path(partial)
    os.replace(partial, dest)
    _fsync_path(dest.parent, directory=True)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
class _Writable:
    """Write operations on an open, not yet committed copy of a store."""

    def __init__(self, f: h5py.File, path: Path) -> None:
        self._f = f
        self.path = path

    @property
    def num_samples(self) -> int:
        return int(self._f["samples/id"].shape[0])

    # -- samples ---------------------------------------------------------------------
    def append_samples(self, records: Sequence[SampleRecord]) -> None:
        """Append samples (ids must be new; class count must match the store)."""
        if not records:
            return
        f = self._f
        n0 = self.num_samples
        n1 = n0 + len(records)
        C = int(f["classes/names"].shape[0]) - 1
        s = f["samples"]
        for name in ("id", "split", "height", "width", "strong", "has_tags"):
            s[name].resize((n1,))
        s["tags"].resize((n1, C))
        s["id"][n0:n1] = [r.id for r in records]
        s["split"][n0:n1] = [r.split for r in records]
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
        images["format"].resize((n1,))
        images["format"][n0:n1] = [r.image_format for r in records]

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
            for ds in f[group].values():
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
        maps = self._f["maps"]
        if name in maps:
            if not overwrite:
                raise StoreError(f"{self.path}: maps {name!r} exist already; pass overwrite to replace them",
                                 param="overwrite")
            del maps[name]
        g = maps.create_group(name)
        g.attrs["encoding"] = "bits"
        g.attrs["config"] = json.dumps(config, sort_keys=True, default=str)
        g.attrs["command"] = command
        g.attrs["created"] = utc_now()
        data = g.create_dataset("bits", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_PIXEL_CHUNK,),
                                compression="gzip", compression_opts=_DEFLATE)
        offsets = g.create_dataset("offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
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
        if count != self.num_samples:
            raise StoreError(f"maps {name!r}: expected {self.num_samples} entries, got {count}")

    # -- proxy sets ------------------------------------------------------------------
    def put_label_maps(self, name: str, maps: Iterable[np.ndarray | None], *, config: dict[str, Any],
                       command: str, overwrite: bool = False) -> None:
        """Write a named proxy set: map kind ``name`` with ``role = "proxy"``.

        maps: one entry per sample in sample order, an ``(H_i, W_i)`` label map with values
        0..C or 255 (ignore), or None for no map.  Stored as the imported ``proxy`` maps are:
        deflated uint8 pixels, offsets and a per-class ``histogram`` ``(N, C + 2)``.
        """
        check_proxy_set_name(name)
        f = self._f
        groups = f["maps"]
        order = 1 + max((int(g.attrs.get("order", 0)) for g in groups.values()
                         if _attr_str(g, "role", "") == "proxy"), default=0)
        if name in groups:
            if _attr_str(groups[name], "role", "") != "proxy":
                raise StoreError(f"{self.path}: maps {name!r} exist already and are not proxies; choose another name",
                                 param="name")
            if not overwrite:
                raise StoreError(f"{self.path}: the set of proxies {name!r} exists already; pass overwrite to "
                                 "replace it or choose another name", param="overwrite")
        sizes = np.stack([f["samples/height"][:], f["samples/width"][:]], axis=1).astype(np.int64)
        ids = f["samples/id"].asstr()[:]
        C = int(f["classes/names"].shape[0]) - 1
        partial = f"{name}.partial"  # built aside, so a refused map leaves an existing set as it was
        if partial in groups:
            del groups[partial]
        g = groups.create_group(partial)
        data = g.create_dataset("pixels", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_PIXEL_CHUNK,),
                                compression="gzip", compression_opts=_DEFLATE)
        offsets = g.create_dataset("offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
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
        g.create_dataset("histogram", data=hist, maxshape=(None, C + 2), chunks=(4096, C + 2))
        g.attrs["encoding"] = "pixels"
        g.attrs["role"] = "proxy"
        g.attrs["order"] = order
        g.attrs["config"] = json.dumps(config, sort_keys=True, default=str)
        g.attrs["command"] = command
        g.attrs["created"] = utc_now()
        g.attrs["uid"] = uuid.uuid4().hex  # tells two writes of the set apart (see proxy_stamp)
        g.attrs["salcurate_version"] = __version__
        if name in groups:
            del groups[name]
            self._drop_derived(name)
        groups.move(partial, name)

    def _drop_derived(self, proxy: str) -> list[str]:
        """Delete what was computed from proxy set ``proxy`` (its score columns, reference maps and
        selections), so that replacing the set never leaves scores of the old proxies behind."""
        f = self._f
        dropped = [f"scores/{n}" for n in f["scores"] if column_proxy(n) == proxy]
        dropped += [f"maps/{n}" for n in f["maps"]
                    if column_proxy(n) == proxy and _attr_str(f[f"maps/{n}"], "role", "") != "proxy"]
        for n in f["selections"]:
            rule = json.loads(_attr_str(f[f"selections/{n}"], "rule", "{}") or "{}")
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
        g = self._f[group]
        if name in g:
            if not overwrite:
                what = "score column" if group == "scores" else "selection"
                raise StoreError(f"{self.path}: {what} {name!r} exists already; pass overwrite to replace it "
                                 "or choose another name", param="overwrite")
            del g[name]
        # Uncompressed and written whole, so every chunk is allocated: in-place filling later
        # overwrites raw bytes only (see the module docstring).
        ds = g.create_dataset(name, data=values, maxshape=(None,), chunks=(max(1, min(len(values), 1 << 16)),))
        for k, v in attrs.items():
            ds.attrs[k] = v
        ds.attrs["created"] = utc_now()
        ds.attrs["salcurate_version"] = __version__


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
    """A copy of the store being changed; committed by :func:`transaction` on success."""


def _init_layout(f: h5py.File, class_names: Sequence[str]) -> None:
    f.attrs["salcurate_format"] = FORMAT_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["salcurate_version"] = __version__
    f.attrs["created"] = utc_now()
    C = len(class_names) - 1
    f.create_dataset("classes/names", data=list(class_names), dtype=_STR)
    s = f.create_group("samples")
    for name, dtype in (("id", _STR), ("split", _STR), ("height", np.uint32), ("width", np.uint32),
                        ("strong", np.uint8), ("has_tags", np.uint8)):
        s.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
    s.create_dataset("tags", shape=(0, C), maxshape=(None, C), dtype=np.uint8, chunks=(4096, max(C, 1)))
    img = f.create_group("images")
    img.create_dataset("bytes", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_BYTES_CHUNK,))
    img.create_dataset("offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
    img.create_dataset("format", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(4096,))
    for kind in MAP_KINDS:
        g = f.create_group(f"maps/{kind}")
        if kind in PNG_KINDS:
            g.attrs["encoding"] = "png"
            g.create_dataset("png", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_BYTES_CHUNK,))
        else:
            g.attrs["encoding"] = "pixels"
            g.create_dataset("pixels", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_PIXEL_CHUNK,),
                             compression="gzip", compression_opts=_DEFLATE)
        g.create_dataset("offsets", data=np.zeros(1, np.uint64), maxshape=(None,), chunks=(4096,))
        if kind in LABEL_KINDS:
            g.create_dataset("histogram", shape=(0, C + 2), maxshape=(None, C + 2), dtype=np.uint32,
                             chunks=(4096, C + 2))
    f.create_group("scores")
    f.create_group("selections")
    f.create_dataset("log/entries", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(256,))


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
    """Build a new store beside ``dest`` and rename it over ``dest`` when the block succeeds.

    On any exception the partial file is removed and ``dest`` is left as it was.
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
    with _write_lock(dest):
        partial = _partial_path(dest)
        try:
            with h5py.File(str(partial), "w", **_RDCC) as f:
                _init_layout(f, class_names)
                yield _Writable(f, dest)
                _finish_log(f, command, config, started)
            _commit(partial, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()


@contextlib.contextmanager
def transaction(path: str | os.PathLike[str], *, command: str, config: dict[str, Any],
                started: float | None = None) -> Iterator[StoreTransaction]:
    """Change a store atomically: all of the block's writes land together, or none do.

    The run log gets one entry for ``command`` with its resolved ``config``.
    """
    path = Path(path)
    started = time.time() if started is None else started
    _check_store_file(path)
    with _write_lock(path):
        with _open_h5(path, "r") as f:
            _check_schema(f, path)
        partial = _partial_path(path)
        try:
            shutil.copyfile(path, partial)
            with h5py.File(str(partial), "r+", **_RDCC) as f:
                tx = StoreTransaction(f, path)
                yield tx
                _finish_log(f, command, config, started)
            _commit(partial, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
