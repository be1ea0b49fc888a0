"""Keeping a store healthy: ``check`` (find damage), ``migrate`` (schema v1 → v2), ``compact``.

Each command is a config dataclass and a ``run_*`` function over :mod:`salcurate.data.store`,
which does the reading and writing (h5py lives there only).
"""

from __future__ import annotations

import dataclasses
import logging

from salcurate.config import setting, store_setting
from salcurate.data import store as store_mod
from salcurate.events import NO_EVENTS, Events, Result

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckConfig:
    """Settings of ``check``."""

    store: str = store_setting()
    decode: bool = setting(False, "Also decode every image (slower; finds damage in v1 stores, which have no "
                                  "checksums).")
    limit: int = setting(20, "Show at most this many damaged samples (the JSON output lists all).", min=0, cli=False)


@dataclasses.dataclass(frozen=True)
class CheckResult(Result):
    """What ``check`` found: nothing (``ok``), or damage to the store or to samples."""

    path: str
    schema_version: int | None
    num_samples: int
    files: list[str]  # the root and its part files
    checksums: bool  # v2 stores keep fletcher32 checksums; v1 stores none
    store_damage: list[str]  # damage to the store itself (root, part files, columns)
    damaged_samples: list[dict[str, object]]  # {"id", "index", "what"} per damaged map or image

    @property
    def ok(self) -> bool:
        return not self.store_damage and not self.damaged_samples

    @property
    def damaged_ids(self) -> list[str]:
        """The damaged samples' ids, each once, in store order."""
        return list(dict.fromkeys(str(d["id"]) for d in self.damaged_samples))


def run_check(config: CheckConfig, *, events: Events | None = None) -> CheckResult:
    """Read every byte of ``config.store`` and report what is damaged (the store is not changed)."""
    events = events or NO_EVENTS
    found = store_mod.check_store(config.store, decode_images=config.decode, start=events.start,
                                  advance=events.advance)
    result = CheckResult(
        path=str(config.store), schema_version=found.schema_version, num_samples=found.num_samples,
        files=[str(f) for f in found.files], checksums=bool(found.schema_version and found.schema_version >= 2),
        store_damage=[d.what for d in found.damage if d.sample is None],
        damaged_samples=[{"id": d.sample, "index": d.index, "what": d.what} for d in found.damage
                         if d.sample is not None],
    )
    if not result.ok:
        log.warning("%s: %d damaged samples, %d problems with the store itself", config.store,
                    len(result.damaged_ids), len(result.store_damage))
    return result


# --------------------------------------------------------------------------------------
# migrate / compact
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrateConfig:
    """Settings of ``migrate``."""

    store: str = store_setting()


@dataclasses.dataclass(frozen=True)
class MigrateResult(Result):
    path: str
    migrated: bool  # False: the store had the current schema already
    backup: str | None  # the v1 file, kept beside the store
    schema_version: int


def run_migrate(config: MigrateConfig, *, events: Events | None = None) -> MigrateResult:
    """Rewrite a schema v1 store as v2 (every write does this too); the v1 file is kept as a backup."""
    backup = store_mod.migrate(config.store)
    return MigrateResult(path=config.store, migrated=backup is not None, backup=str(backup) if backup else None,
                         schema_version=store_mod.SCHEMA_VERSION)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompactConfig:
    """Settings of ``compact``."""

    store: str = store_setting()


@dataclasses.dataclass(frozen=True)
class CompactResult(Result):
    path: str
    bytes_before: int
    bytes_after: int
    files: int  # the root and its part files after compaction


def run_compact(config: CompactConfig, *, events: Events | None = None) -> CompactResult:
    """Gather the store's score columns and selections into one part and delete unused part files."""
    before, after = store_mod.compact(config.store)
    return CompactResult(path=config.store, bytes_before=before, bytes_after=after,
                         files=len(store_mod.store_files(config.store)))
