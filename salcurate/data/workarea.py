"""Work areas: where a long, resumable computation keeps its partial results.

A command such as ``score-coarse`` writes per-sample results into memory-mapped files in a
folder beside the store (``.masks.h5.work/<command>-<config hash>/``), and marks a sample done
only after its results are flushed.  Killed and run again with the same config, it finds the
work area, skips the done samples and continues; the store itself receives the complete
results in one transaction at the end (see ``salcurate.data.store.transaction``), after which the
work area is deleted.  The store is never open for writing while the work runs, so a kill can
not damage it.

A work area keeps float columns per sample and, as a command needs them, bit-packed binary masks
(``score-coarse``'s reference masks, ``mask_sizes``) and uint8 label maps (``pseudo-label``'s
proxies, ``label_shapes``), each at a fixed offset of one flat file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salcurate.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


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


class WorkArea:
    """Per-sample float columns, bit-packed masks and uint8 label maps of known sizes, with done flags.

    columns: names of ``(N,)`` float32 results; mask_sizes: ``(N,)`` pixel count of each
    sample's mask (0 = no mask); label_shapes: ``(N, 2)`` height and width of each sample's
    label map (0 = no map).  Open it with :func:`open_work_area`.  Files are written with
    ``pwrite`` (not memory-mapped), so the masks and maps never sit in this process's memory.
    """

    def __init__(self, folder: Path, columns: Sequence[str], mask_sizes: np.ndarray | None,
                 label_shapes: np.ndarray | None = None) -> None:
        self.folder = folder
        self.columns = list(columns)
        n = int(json.loads((folder / "meta.json").read_text())["num_samples"])
        self.num_samples = n
        self._k = max(1, len(self.columns))
        self._done = np.fromfile(folder / "done.u8", dtype=np.uint8, count=n)
        self._values = np.fromfile(folder / "columns.f32", dtype=np.float32, count=n * self._k).reshape(n, self._k)
        self._fd_done = os.open(folder / "done.u8", os.O_RDWR)
        self._fd_values = os.open(folder / "columns.f32", os.O_RDWR)
        self._fd_bits = None
        if mask_sizes is not None:
            self._mask_sizes = np.asarray(mask_sizes, dtype=np.int64)
            self._bit_offsets = np.concatenate([[0], np.cumsum((self._mask_sizes + 7) // 8)])
            self._fd_bits = os.open(folder / "masks.bits", os.O_RDWR)
        self._fd_labels = None
        if label_shapes is not None:
            self._label_shapes = _label_shapes(label_shapes, n)
            sizes = self._label_shapes[:, 0] * self._label_shapes[:, 1]
            self._label_offsets = np.concatenate([[0], np.cumsum(sizes)])
            self._fd_labels = os.open(folder / "labels.u8", os.O_RDWR)

    @property
    def done(self) -> np.ndarray:
        """``(N,)`` bool: samples whose results are complete."""
        return self._done.astype(bool)

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
        if masks is not None and self._fd_bits is not None:
            for i, m in zip(idx.tolist(), masks):
                if m is not None and self._mask_sizes[i]:
                    os.pwrite(self._fd_bits, np.packbits(m.reshape(-1)).tobytes(), int(self._bit_offsets[i]))
        if labels is not None and self._fd_labels is not None:
            for i, lab in zip(idx.tolist(), labels):
                if lab is None or not self._label_offsets[i + 1] > self._label_offsets[i]:
                    continue
                lab = np.asarray(lab)
                if lab.shape != tuple(self._label_shapes[i]) or lab.dtype != np.uint8:
                    raise StoreError(f"work area {self.folder}: sample {i}'s label map must be "
                                     f"{tuple(int(v) for v in self._label_shapes[i])} uint8, got {lab.dtype} "
                                     f"{lab.shape}")
                os.pwrite(self._fd_labels, np.ascontiguousarray(lab).tobytes(), int(self._label_offsets[i]))
        for i, v in zip(idx.tolist(), vals):
            os.pwrite(self._fd_values, v.tobytes(), i * self._k * 4)
        self._values[idx] = vals
        for i in idx.tolist():
            os.pwrite(self._fd_done, b"\x01", i)
        self._done[idx] = 1

    def values(self) -> dict[str, np.ndarray]:
        """Every column, ``(N,)`` float32, NaN where not done."""
        done = self.done
        out = {}
        for j, name in enumerate(self.columns):
            col = self._values[:, j].copy()
            col[~done] = np.nan
            out[name] = col
        return out

    def packed_mask(self, i: int) -> np.ndarray | None:
        """Sample i's mask as packed bits (``np.packbits`` of the row-major mask), or None."""
        if self._fd_bits is None or not self._mask_sizes[i]:
            return None
        lo, hi = int(self._bit_offsets[i]), int(self._bit_offsets[i + 1])
        return np.frombuffer(os.pread(self._fd_bits, hi - lo, lo), dtype=np.uint8)

    def label_map(self, i: int) -> np.ndarray | None:
        """Sample i's label map, ``(H, W)`` uint8 (what :meth:`write` stored; zeros until then), or None."""
        if self._fd_labels is None:
            return None
        lo, hi = int(self._label_offsets[i]), int(self._label_offsets[i + 1])
        if hi == lo:
            return None
        flat = np.frombuffer(os.pread(self._fd_labels, hi - lo, lo), dtype=np.uint8)
        return flat.reshape(int(self._label_shapes[i, 0]), int(self._label_shapes[i, 1])).copy()

    def close(self) -> None:
        for name in ("_fd_done", "_fd_values", "_fd_bits", "_fd_labels"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _label_shapes(shapes: np.ndarray, n: int) -> np.ndarray:
    out = np.asarray(shapes, dtype=np.int64).reshape(-1, 2) if len(shapes) else np.zeros((0, 2), np.int64)
    if out.shape != (n, 2) or (out < 0).any():
        raise StoreError(f"label_shapes must be ({n}, 2) non-negative (height, width) pairs, got {out.shape}")
    return out


def _shapes_fingerprint(shapes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(shapes, dtype="<i8").tobytes()).hexdigest()[:16]


@contextlib.contextmanager
def open_work_area(store_path: Path, command: str, config: dict[str, Any], *, ids: Sequence[str],
                   columns: Sequence[str], mask_sizes: np.ndarray | None = None,
                   label_shapes: np.ndarray | None = None, fresh: bool = False) -> Iterator[WorkArea]:
    """Open (or create) the work area of ``command`` with ``config`` for the store's samples.

    ``mask_sizes``: ``(N,)`` pixels of each sample's binary mask (0 = none); ``label_shapes``:
    ``(N, 2)`` height and width of each sample's uint8 label map (0 = none).  A work area made
    for other samples (the store was re-imported), or for other sizes, is discarded.  Only one
    process may use a work area at a time.  The caller deletes it with :func:`remove_work_area`
    once its results are in the store.
    """
    root = store_path.with_name(f".{store_path.name}.work")
    folder = root / f"{command}-{config_hash(config)}"
    meta = {"command": command, "config": config, "ids": ids_fingerprint(ids), "num_samples": len(ids),
            "columns": list(columns), "masks": mask_sizes is not None}
    if label_shapes is not None:  # only then: the meta of areas without label maps stays as it was
        label_shapes = _label_shapes(label_shapes, len(ids))
        meta["labels"] = _shapes_fingerprint(label_shapes)
    root.mkdir(exist_ok=True)
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
            if fresh or old != json.loads(json.dumps(meta, default=str)):
                shutil.rmtree(folder)
        if not folder.exists():
            tmp = root / f".{folder.name}.new"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            n = len(ids)
            np.zeros(n, np.uint8).tofile(tmp / "done.u8")
            np.full((n, max(1, len(columns))), np.nan, np.float32).tofile(tmp / "columns.f32")
            if mask_sizes is not None:
                total = int(((np.asarray(mask_sizes, np.int64) + 7) // 8).sum())
                with open(tmp / "masks.bits", "wb") as fh:
                    fh.truncate(total)
            if label_shapes is not None:
                with open(tmp / "labels.u8", "wb") as fh:
                    fh.truncate(int((label_shapes[:, 0] * label_shapes[:, 1]).sum()))
            (tmp / "meta.json").write_text(json.dumps(meta, default=str))
            os.replace(tmp, folder)
        area = WorkArea(folder, columns, mask_sizes, label_shapes)
        try:
            yield area
        finally:
            area.close()
    finally:
        os.close(lock_fd)


def remove_work_area(area: WorkArea) -> None:
    """Delete a work area whose results have been committed to the store."""
    shutil.rmtree(area.folder, ignore_errors=True)
    root = area.folder.parent
    with contextlib.suppress(OSError):
        (root / f"{area.folder.name}.lock").unlink()
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty
