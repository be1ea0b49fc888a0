"""The data stage's library entry points: ``run(config, *, events=None) -> Result`` of import,
info, export and the demo, without the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NO_GT_ID, TinyVoc

from salcurate import config as cfg
from salcurate.data import export, importing, info
from salcurate.data.demo_data import DemoConfig
from salcurate.data.store import MaskStore
from salcurate.errors import InputError, StoreError
from salcurate.events import Events


class Recorder(Events):
    """Remembers the events a command sends."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.advanced: list[int] = []

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        self.started.append(total)

    def advance(self, n: int = 1, **info: object) -> None:
        self.advanced.append(n)


def _import_config(v: TinyVoc, out: Path, **over: object) -> importing.ImportConfig:
    settings: dict[str, object] = dict(
        layout=importing.ImportLayout.voc, root=str(v.root), output=str(out), splits=("train", "val"),
        pseudo_dir=str(v.proxy_dir), saliency_dir=str(v.saliency_dir), tags_file=str(v.tags_csv),
        class_names_file=str(v.class_names_file), workers=1)
    settings.update(over)
    return importing.ImportConfig(**settings)  # type: ignore[arg-type]


# -- import -------------------------------------------------------------------------------
def test_import_run_result_events_and_saved_config(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    config = _import_config(tiny_voc, out)
    events = Recorder()
    res = importing.run(config, events=events)
    assert isinstance(res, importing.ImportResult)
    assert (res.num_imported, res.num_total, res.per_split) == (6, 6, {"train": 4, "val": 2})
    counts = (res.with_proxy, res.with_gt, res.with_saliency, res.with_tags, res.strong, res.skipped)
    assert counts == (6, 5, 6, 5, 0, 0)
    assert events.started == [6] and sum(events.advanced) == 6
    data = res.to_dict()
    assert data["output"] == str(out) and json.loads(json.dumps(data)) == data
    with MaskStore(out) as st:
        (entry,) = st.run_log()
    saved = entry["config"]
    assert saved.pop("resolved")["proxy"] == str(tiny_voc.proxy_dir)
    assert saved == cfg.to_dict(config) and saved["layout"] == "voc"


def test_import_run_takes_plain_strings_for_the_layout(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    res = importing.run(_import_config(tiny_voc, tmp_path / "masks.h5", layout="voc", splits=("val",)))
    assert res.num_imported == 2


def test_import_run_unknown_layout(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown layout 'coco'; expected voc or folder") as info_:
        importing.run(_import_config(tiny_voc, tmp_path / "masks.h5", layout="coco"))
    assert info_.value.params == ("layout",)


def test_import_run_errors_name_parameters(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    importing.run(_import_config(tiny_voc, out))
    with pytest.raises(InputError, match="exists already; pass overwrite to replace it or append") as exc:
        importing.run(_import_config(tiny_voc, out))
    assert exc.value.params == ("overwrite", "append")
    with pytest.raises(InputError, match="give one tag source: tags_file, tags_dir or tags_from_gt") as exc:
        importing.run(_import_config(tiny_voc, tmp_path / "b.h5", tags_from_gt=True))
    assert exc.value.params == ("tags_file", "tags_dir", "tags_from_gt")
    with pytest.raises(InputError, match=r"proxy annotation folder \(pseudo_dir\) not found") as exc:
        importing.run(_import_config(tiny_voc, tmp_path / "c.h5", pseudo_dir=str(tmp_path / "nowhere")))
    assert exc.value.params == ("pseudo_dir",)


def test_plan_import_resolves_the_folders(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    plan = importing.plan_import(_import_config(tiny_voc, tmp_path / "masks.h5"))
    assert [p.id for p in plan.samples] == tiny_voc.ids
    assert plan.class_names == tiny_voc.class_names and plan.skipped == 0
    by_id = {p.id: p for p in plan.samples}
    assert by_id[NO_GT_ID].gt is None and by_id[NO_GT_ID].tags is None
    assert by_id["s001"].gt == tiny_voc.gt_dir / "s001.png" and by_id["s001"].tags == tiny_voc.tags["s001"]
    assert plan.resolved["gt"] == str(tiny_voc.gt_dir) and plan.resolved["tags"] == str(tiny_voc.tags_csv)


# -- info ---------------------------------------------------------------------------------
def test_info_run_is_the_store_summary(tiny_store: Path) -> None:
    res = info.run(info.InfoConfig(store=str(tiny_store)))
    assert isinstance(res, info.InfoResult)
    with MaskStore(tiny_store) as st:
        summary = info.store_summary(st)
    assert res.to_dict() == json.loads(json.dumps(summary))
    assert list(res.to_dict()) == list(summary)
    assert res.num_samples == 6 and res.splits == {"train": 4, "val": 2}


def test_info_run_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no mask store here"):
        info.run(info.InfoConfig(store=str(tmp_path / "nowhere.h5")))


# -- export -------------------------------------------------------------------------------
def test_export_run_result_events_and_saved_config(tiny_store: Path, tmp_path: Path) -> None:
    config = export.ExportConfig(store=str(tiny_store), out=str(tmp_path / "export"), kind="gt", workers=1)
    events = Recorder()
    res = export.run(config, events=events)
    assert isinstance(res, export.ExportResult)
    assert (res.exported, res.without_mask, res.scores_csv) == (5, 1, None)
    assert events.started == [5] and sum(events.advanced) == 5
    assert json.loads((tmp_path / "export" / "export.json").read_text())["config"] == cfg.to_dict(config)


def test_export_run_errors_name_parameters(tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    with pytest.raises(InputError, match="folder is not empty; pass overwrite to write into it") as exc:
        export.run(export.ExportConfig(store=str(tiny_store), out=str(target)))
    assert exc.value.params == ("overwrite",)


# -- demo ---------------------------------------------------------------------------------
def test_demo_run_makes_the_data_and_gives_the_steps(tmp_path: Path) -> None:
    from salcurate.demo import DemoResult, DemoRunConfig, run

    events = Recorder()
    res = run(DemoRunConfig(folder=str(tmp_path / "demo"), data=DemoConfig(num_images=8, size=32)), events=events)
    assert isinstance(res, DemoResult)
    assert events.started == [8] and sum(events.advanced) == 8
    assert res.dataset == tmp_path / "demo" / "voc" and (res.dataset / "tags.csv").is_file()
    assert res.num_images == 8 and sum(res.splits.values()) == 8
    assert res.steps[0][:3] == ("import", "voc", str(res.dataset)) and res.steps[1] == ("info", str(res.store))
    assert json.loads(json.dumps(res.to_dict()))["steps"][0][0] == "import"


def test_demo_config_is_flat_on_the_command_line() -> None:
    from salcurate.demo import DemoRunConfig

    config = cfg.from_dict(DemoRunConfig, cfg.nest(DemoRunConfig, {"folder": "d", "num_images": 9, "seed": 2}))
    assert config == DemoRunConfig(folder="d", data=DemoConfig(num_images=9, seed=2))
