"""Work areas: where a long, resumable computation keeps its partial results.

A command such as ``score-coarse`` writes per-sample results into files in a folder beside the
store (``.masks.h5.work/<command>-<config hash>/``), and marks a sample done only after its
results are written.  Killed and run again with the same config, it finds the work area, skips
the done samples and continues; the store itself receives the complete results in one
transaction at the end (see ``salcurate.data.store.transaction``), after which the work area is
deleted.  The store is never open for writing while the work runs, so a kill can not damage it.

A work area keeps float columns per sample and, as a command needs them, bit-packed binary masks
(``score-coarse``'s reference masks, ``mask_sizes``) and uint8 label maps (``pseudo-label``'s
proxies, ``label_shapes``), each at a fixed offset of one flat file.

Many processes (``torchrun``, :func:`shard_work`): every rank computes its own samples into its
own set of files in the shared folder (rank 0 ``done.u8``, ``columns.f32``, ...; rank r
``done.r.u8``, ``columns.r.f32``, ...; the mask and label files are sparse), and readers merge
them: a sample is done when any rank's done flag is set, its results come from that rank's files.
Disjoint samples of one file would be safe on a local disk (``pwrite`` changes only its own
bytes), but not across machines on a network file system, where a client may write back a whole
cached page, neighbours' bytes included; one writer per file is safe on both.  A run resumed
with another number of ranks reads the files of every earlier rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.data.store import keep_mode
from salcurate.distributed import DistInfo, barrier
from salcurate.errors import StoreError
from salcurate.events import NO_EVENTS, Events

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: The per-writer files: done flags (one byte per sample), float columns, packed masks, label maps.
DONE, VALUES, BITS, LABELS = "done.u8", "columns.f32", "masks.bits", "labels.u8"
#: How often (seconds) the main rank counts every rank's done flags for its progress bar.
PROGRESS_POLL_S = 1.0
#: How long a rank of a sharded pass waits at a barrier for the slowest rank (the process group's
#: timeout: pass it to ``salcurate.distributed.session``).  A rank that dies ends the job through
#: torchrun at once; this only bounds a rank that hangs.
SHARD_TIMEOUT_S = 24 * 3600.0


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a resolved config (6 hex digits)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:6]


def ids_fingerprint(ids: Sequence[str]) -> str:
    """Identifies a store's samples, so a work area is never resumed on another dataset."""
    h = hashlib.sha256()
    for sample_id in ids:
        h.update(sample_id.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def writer_file(base: str, writer: int) -> str:
    """The name of writer (rank) ``writer``'s file ``base``: ``done.u8`` for 0, ``done.3.u8`` for 3."""
    if writer == 0:
        return base
    stem, ext = base.split(".", 1)
    return f"{stem}.{writer}.{ext}"


def _writers(folder: Path) -> list[int]:
    """The ranks whose done flags are in ``folder`` (their other files exist too), in order."""
    out = []
    for p in folder.glob("done*.u8"):
        m = re.fullmatch(r"done(?:\.(\d+))?\.u8", p.name)
        if m:
            out.append(int(m.group(1) or 0))
    return sorted(out)


def _make_files(folder: Path, writer: int, n: int, k: int, bits: int | None, labels: int | None) -> None:
    """Writer ``writer``'s empty files in ``folder``, each whole or absent (written beside, then
    renamed), the done flags last: where they are, the rest is."""
    def put(base: str, write: Any) -> None:
        final = folder / writer_file(base, writer)
        tmp = folder / f".{final.name}.new"
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, final)

    put(VALUES, lambda fh: np.full((n, max(1, k)), np.nan, np.float32).tofile(fh))
    if bits is not None:
        put(BITS, lambda fh: fh.truncate(bits))  # sparse: takes space as it is written
    if labels is not None:
        put(LABELS, lambda fh: fh.truncate(labels))
    put(DONE, lambda fh: np.zeros(n, np.uint8).tofile(fh))


class WorkArea:
    """Per-sample float columns, bit-packed masks and uint8 label maps of known sizes, with done flags.

    columns: names of ``(N,)`` float32 results; mask_sizes: ``(N,)`` pixel count of each
    sample's mask (0 = no mask); label_shapes: ``(N, 2)`` height and width of each sample's
    label map (0 = no map); writer: the rank whose files :meth:`write` writes (its files are
    made when missing).  Open it with :func:`open_work_area` (or :func:`shard_work`).  Files are
    written with ``pwrite`` (not memory-mapped), so the masks and maps never sit in this
    process's memory.  What it reads (:attr:`done`, :meth:`values`, ...) merges every writer's
    files as they were when opened or last :meth:`refresh`-ed, plus this process's writes.
    """

    def __init__(self, folder: Path, columns: Sequence[str], mask_sizes: np.ndarray | None,
                 label_shapes: np.ndarray | None = None, *, writer: int = 0) -> None:
        self.folder = folder
        self.columns = list(columns)
        self.writer = int(writer)
        n = int(json.loads((folder / "meta.json").read_text())["num_samples"])
        self.num_samples = n
        self._k = max(1, len(self.columns))
        self._mask_sizes = self._bit_offsets = self._label_shapes = self._label_offsets = None
        if mask_sizes is not None:
            self._mask_sizes = np.asarray(mask_sizes, dtype=np.int64)
            self._bit_offsets = np.concatenate([[0], np.cumsum((self._mask_sizes + 7) // 8)])
        if label_shapes is not None:
            self._label_shapes = _label_shapes(label_shapes, n)
            sizes = self._label_shapes[:, 0] * self._label_shapes[:, 1]
            self._label_offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._fds: dict[tuple[str, int], int] = {}
        self._load()

    # -- files ------------------------------------------------------------------------------
    def _load(self) -> None:
        """Make this writer's files if missing, open them, and read every writer's flags and values."""
        n = self.num_samples
        if not (self.folder / writer_file(DONE, self.writer)).exists():
            _make_files(self.folder, self.writer, n, len(self.columns),
                        None if self._bit_offsets is None else int(self._bit_offsets[-1]),
                        None if self._label_offsets is None else int(self._label_offsets[-1]))
        self._owner = np.full(n, -1, np.int32)  # the writer whose files hold sample i (-1: not done)
        self._values = np.full((n, self._k), np.nan, np.float32)
        for w in reversed(_writers(self.folder)):  # the lowest rank wins (two never write one sample)
            done = np.fromfile(self.folder / writer_file(DONE, w), dtype=np.uint8, count=n).astype(bool)
            if len(done) != n:
                raise StoreError(f"work area {self.folder}: {writer_file(DONE, w)} holds {len(done)} samples, "
                                 f"expected {n}; delete the folder and run again")
            values = np.fromfile(self.folder / writer_file(VALUES, w), dtype=np.float32, count=n * self._k)
            self._owner[done] = w
            self._values[done] = values.reshape(n, self._k)[done]
        for base in (DONE, VALUES, BITS, LABELS):
            if (base == BITS and self._bit_offsets is None) or (base == LABELS and self._label_offsets is None):
                continue
            self._fds[(base, self.writer)] = os.open(self.folder / writer_file(base, self.writer), os.O_RDWR)

    def _fd(self, base: str, writer: int) -> int:
        """An open file descriptor of writer ``writer``'s file ``base`` (another writer's: read only)."""
        fd = self._fds.get((base, writer))
        if fd is None:
            fd = self._fds[(base, writer)] = os.open(self.folder / writer_file(base, writer), os.O_RDONLY)
        return fd

    def refresh(self) -> None:
        """Read every writer's files again (after the other ranks finished: see :meth:`Shard.gather`)."""
        self.close()
        self._load()

    def done_on_disk(self) -> np.ndarray:
        """``(N,)`` bool: done by any writer now (read from the files, for progress while others write)."""
        out = np.zeros(self.num_samples, bool)
        for w in _writers(self.folder):
            with contextlib.suppress(OSError):
                flags = np.frombuffer(os.pread(self._fd(DONE, w), self.num_samples, 0), np.uint8)
                out[: len(flags)] |= flags.astype(bool)
        return out

    # -- results ----------------------------------------------------------------------------
    @property
    def done(self) -> np.ndarray:
        """``(N,)`` bool: samples whose results are complete."""
        return self._owner >= 0

    def write(self, indices: Sequence[int], values: np.ndarray,
              masks: Sequence[np.ndarray | None] | None = None,
              labels: Sequence[np.ndarray | None] | None = None) -> None:
        """Record results for ``indices``: values ``(K, len(columns))``, masks ``(H, W)`` bool each,
        labels ``(H, W)`` uint8 each (of the shape the area was opened with).

        Each sample's data are written before it is marked done, so a kill at any moment
        leaves each sample either done with all its results, or not done.
        """
        idx = np.asarray(indices, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float32).reshape(len(idx), self._k)
        me = self.writer
        if masks is not None and self._bit_offsets is not None:
            for i, m in zip(idx.tolist(), masks):
                if m is not None and self._mask_sizes[i]:
                    os.pwrite(self._fd(BITS, me), np.packbits(m.reshape(-1)).tobytes(), int(self._bit_offsets[i]))
        if labels is not None and self._label_offsets is not None:
            for i, lab in zip(idx.tolist(), labels):
                if lab is None or not self._label_offsets[i + 1] > self._label_offsets[i]:
                    continue
                lab = np.asarray(lab)
                if lab.shape != tuple(self._label_shapes[i]) or lab.dtype != np.uint8:
                    raise StoreError(f"work area {self.folder}: sample {i}'s label map must be "
                                     f"{tuple(int(v) for v in self._label_shapes[i])} uint8, got {lab.dtype} "
                                     f"{lab.shape}")
                os.pwrite(self._fd(LABELS, me), np.ascontiguousarray(lab).tobytes(), int(self._label_offsets[i]))
        for i, v in zip(idx.tolist(), vals):
            os.pwrite(self._fd(VALUES, me), v.tobytes(), i * self._k * 4)
        self._values[idx] = vals
        for i in idx.tolist():
            os.pwrite(self._fd(DONE, me), b"\x01", i)
        self._owner[idx] = me

    def values(self) -> dict[str, np.ndarray]:
        """Every column, ``(N,)`` float32, NaN where not done."""
        done = self.done
        out = {}
        for j, name in enumerate(self.columns):
            col = self._values[:, j].copy()
            col[~done] = np.nan
            out[name] = col
        return out

    def _source(self, i: int) -> int:
        w = int(self._owner[i])
        return w if w >= 0 else self.writer

    def packed_mask(self, i: int) -> np.ndarray | None:
        """Sample i's mask as packed bits (``np.packbits`` of the row-major mask), or None."""
        if self._bit_offsets is None or not self._mask_sizes[i]:
            return None
        lo, hi = int(self._bit_offsets[i]), int(self._bit_offsets[i + 1])
        return np.frombuffer(os.pread(self._fd(BITS, self._source(i)), hi - lo, lo), dtype=np.uint8)

    def label_map(self, i: int) -> np.ndarray | None:
        """Sample i's label map, ``(H, W)`` uint8 (what :meth:`write` stored; zeros until then), or None."""
        if self._label_offsets is None:
            return None
        lo, hi = int(self._label_offsets[i]), int(self._label_offsets[i + 1])
        if hi == lo:
            return None
        flat = np.frombuffer(os.pread(self._fd(LABELS, self._source(i)), hi - lo, lo), dtype=np.uint8)
        return flat.reshape(int(self._label_shapes[i, 0]), int(self._label_shapes[i, 1])).copy()

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


def _label_shapes(shapes: np.ndarray, n: int) -> np.ndarray:
    out = np.asarray(shapes, dtype=np.int64).reshape(-1, 2) if len(shapes) else np.zeros((0, 2), np.int64)
    if out.shape != (n, 2) or (out < 0).any():
        raise StoreError(f"label_shapes must be ({n}, 2) non-negative (height, width) pairs, got {out.shape}")
    return out


def _shapes_fingerprint(shapes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(shapes, dtype="<i8").tobytes()).hexdigest()[:16]


def _folder_and_meta(store_path: Path, command: str, config: dict[str, Any], ids: Sequence[str],
                     columns: Sequence[str], mask_sizes: np.ndarray | None,
                     label_shapes: np.ndarray | None) -> tuple[Path, dict[str, Any], np.ndarray | None]:
    folder = store_path.with_name(f".{store_path.name}.work") / f"{command}-{config_hash(config)}"
    meta = {"command": command, "config": config, "ids": ids_fingerprint(ids), "num_samples": len(ids),
            "columns": list(columns), "masks": mask_sizes is not None}
    if label_shapes is not None:  # only then: the meta of areas without label maps stays as it was
        label_shapes = _label_shapes(label_shapes, len(ids))
        meta["labels"] = _shapes_fingerprint(label_shapes)
    return folder, json.loads(json.dumps(meta, default=str)), label_shapes


@contextlib.contextmanager
def open_work_area(store_path: Path, command: str, config: dict[str, Any], *, ids: Sequence[str],
                   columns: Sequence[str], mask_sizes: np.ndarray | None = None,
                   label_shapes: np.ndarray | None = None, fresh: bool = False) -> Iterator[WorkArea]:
    """Open (or create) the work area of ``command`` with ``config`` for the store's samples.

    ``mask_sizes``: ``(N,)`` pixels of each sample's binary mask (0 = none); ``label_shapes``:
    ``(N, 2)`` height and width of each sample's uint8 label map (0 = none).  A work area made
    for other samples (the store was re-imported), or for other sizes, is discarded.  Only one
    run may use a work area at a time (its ranks join with :func:`shard_work`).  The caller
    deletes it with :func:`remove_work_area` once its results are in the store.
    """
    folder, meta, label_shapes = _folder_and_meta(store_path, command, config, ids, columns, mask_sizes,
                                                  label_shapes)
    root = folder.parent
    if not root.is_dir():
        root.mkdir()
        with contextlib.suppress(OSError):  # partial results are as private as the store they come from
            keep_mode(root, store_path, folder=True)
    lock_fd = os.open(root / f"{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StoreError(f"{store_path}: another `salcurate {command}` with this config is running; "
                                 "wait for it") from None
        meta_path = folder / "meta.json"
        if folder.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                old = None
            if fresh or old != meta:
                shutil.rmtree(folder)
        if not folder.exists():
            tmp = root / f".{folder.name}.new"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            bits = None if mask_sizes is None else int(((np.asarray(mask_sizes, np.int64) + 7) // 8).sum())
            labels = None if label_shapes is None else int((label_shapes[:, 0] * label_shapes[:, 1]).sum())
            _make_files(tmp, 0, len(ids), len(columns), bits, labels)
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.replace(tmp, folder)
        area = WorkArea(folder, columns, mask_sizes, label_shapes)
        try:
            yield area
        finally:
            area.close()
    finally:
        os.close(lock_fd)


@contextlib.contextmanager
def attach_work_area(store_path: Path, command: str, config: dict[str, Any], *, ids: Sequence[str],
                     columns: Sequence[str], writer: int, mask_sizes: np.ndarray | None = None,
                     label_shapes: np.ndarray | None = None) -> Iterator[WorkArea]:
    """Join the work area rank 0 opened with :func:`open_work_area` (same arguments), as writer ``writer``.

    Raises StoreError when it is not there or was made for another config or other samples (the
    ranks were started with different arguments).
    """
    folder, meta, label_shapes = _folder_and_meta(store_path, command, config, ids, columns, mask_sizes,
                                                  label_shapes)
    try:
        old = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        old = None
    if old != meta:
        raise StoreError(f"{store_path}: rank {writer} found no work area of `salcurate {command}` with its config "
                         f"({folder.name}) where rank 0 made one; start every rank with the same arguments and "
                         "the same store (one file system for all machines)")
    area = WorkArea(folder, columns, mask_sizes, label_shapes, writer=writer)
    try:
        yield area
    finally:
        area.close()


def remove_work_area(area: WorkArea) -> None:
    """Delete a work area whose results have been committed to the store."""
    shutil.rmtree(area.folder, ignore_errors=True)
    root = area.folder.parent
    with contextlib.suppress(OSError):
        (root / f"{area.folder.name}.lock").unlink()
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty


# ------------------------------------------------------------------------------------------
# Many ranks: one shard each
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Shard:
    """This rank's part of a per-sample pass over a work area (made by :func:`shard_work`).

    ``todo``: every rank's samples still to compute (store indices, ascending); ``mine``: this
    rank's, ``todo[rank::world]``; ``needed``: ``(N,)`` bool, the samples the pass covers.
    """

    area: WorkArea
    info: DistInfo
    ids: Sequence[str]
    needed: np.ndarray
    todo: np.ndarray
    mine: np.ndarray
    resumed: int
    events: Events
    _shown: int = 0
    _polled: float = 0.0

    @property
    def main(self) -> bool:
        """Whether this is the rank that commits to the store (rank 0; the only one in one process)."""
        return self.info.main

    @property
    def total(self) -> int:
        return int(self.needed.sum())

    def advance(self, n: int) -> None:
        """This rank finished ``n`` more samples.  In one process: ``events.advance(n)``; with many,
        the main rank's progress counts every rank's done flags (at most every :data:`PROGRESS_POLL_S`)."""
        if self.info.world == 1:
            self.events.advance(n)
            return
        if not self.main:
            return
        step = n
        now = time.monotonic()
        if now - self._polled >= PROGRESS_POLL_S:
            self._polled = now
            step = max(0, int((self.area.done_on_disk() & self.needed).sum()) - self._shown)
        self._shown += step
        if step:
            self.events.advance(step)

    def gather(self) -> None:
        """Wait until every rank has written its shard; then :attr:`area` holds every rank's results.

        Raises StoreError when a sample of the pass is still not done (a rank stopped early).
        """
        if self.info.enabled:
            self.area.close()  # on a network file system: this rank's writes reach the server
            barrier(self.info)
            self.area.refresh()
            if self.main and self.info.world > 1 and self._shown < self.total:
                self.events.advance(self.total - self._shown)
                self._shown = self.total
        missing = np.flatnonzero(self.needed & ~self.area.done)
        if len(missing):
            raise StoreError(f"{len(missing)} samples have no results in the work area {self.area.folder} after "
                             f"every rank finished (first: {self.ids[int(missing[0])]!r}); run the command again "
                             "to compute them")

    def finish(self) -> None:
        """After the main rank's commit: every rank waits for it, then the main rank deletes the work area."""
        barrier(self.info)
        if self.main:
            remove_work_area(self.area)


@contextlib.contextmanager
def shard_work(store_path: Path, command: str, config: dict[str, Any], *, ids: Sequence[str],
               columns: Sequence[str], needed: np.ndarray, info: DistInfo | None = None,
               events: Events | None = None, mask_sizes: np.ndarray | None = None,
               label_shapes: np.ndarray | None = None) -> Iterator[Shard]:
    """The work area of a per-sample pass, shared by the ranks of a ``torchrun`` job.

    Rank 0 opens (or makes) the work area first (:func:`open_work_area`, holding its lock for
    the job), the others then join it (:func:`attach_work_area`); every rank reads which samples
    are done before any rank writes, and takes ``todo[rank::world]`` of the ``needed`` samples
    not yet done.  ``events`` (main rank only): ``start(needed, done before)`` here, then
    :meth:`Shard.advance`.  The caller computes ``shard.mine`` into ``shard.area``, calls
    :meth:`Shard.gather`, commits on the main rank alone, then calls :meth:`Shard.finish`::

        with shard_work(path, "score-x", cfg, ids=ids, columns=("x",), needed=has_proxy, info=info) as shard:
            for i in shard.mine: shard.area.write([i], ...); shard.advance(1)
            shard.gather()
            if shard.main: ...commit shard.area.values()...
            shard.finish()

    One process (``info`` None or not launched by torchrun): no waiting, ``mine`` is ``todo``.
    """
    info = info or DistInfo()
    events = (events or NO_EVENTS) if info.main else NO_EVENTS
    needed = np.asarray(needed, dtype=bool)
    kw: dict[str, Any] = dict(ids=ids, columns=columns, mask_sizes=mask_sizes, label_shapes=label_shapes)
    with contextlib.ExitStack() as stack:
        if info.main:
            area = stack.enter_context(open_work_area(store_path, command, config, **kw))
        barrier(info)  # rank 0 has made, checked or emptied the work area
        if not info.main:
            area = stack.enter_context(attach_work_area(store_path, command, config, writer=info.rank, **kw))
        done = area.done
        todo = np.flatnonzero(needed & ~done)
        barrier(info)  # every rank has read the done flags before any rank writes
        resumed = int((done & needed).sum())
        events.start(int(needed.sum()), resumed)
        yield Shard(area, info, ids, needed, todo, todo[info.rank :: info.world], resumed, events,
                    _shown=resumed, _polled=time.monotonic())
