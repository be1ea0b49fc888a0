"""The ``salcurate`` command line on the tiny dataset: import, info, export, demo."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import NO_GT_ID, TinyVoc, assert_ok, file_digest, invoke, voc_args
from PIL import Image

from salcurate._version import __version__
from salcurate.data.store import MaskStore
from salcurate.imageio import read_label_png, voc_palette, write_grey_png, write_label_png


def flat(text: str) -> str:
    """Whitespace-normalized output (rich wraps long lines at the terminal width)."""
    return " ".join(text.split())


def store_contents(path: Path) -> dict[str, dict[str, object]]:
    """id -> everything the store holds for that sample."""
    with MaskStore(path) as st:
        return {
            sample_id: {
                "split": str(st.splits[i]),
                "image": st.image_bytes(i),
                "size": (int(st.heights[i]), int(st.widths[i])),
                "proxy": st.map("proxy", i),
                "gt": st.map("gt", i),
                "saliency": st.map("saliency", i),
                "tags": tuple(int(k) + 1 for k in np.flatnonzero(st.tags[i])) if st.has_tags[i] else None,
            }
            for i, sample_id in enumerate(st.ids)
        }


def assert_same_maps(a: np.ndarray | None, b: np.ndarray | None) -> None:
    if b is None:
        assert a is None
    else:
        assert a is not None and a.dtype == np.uint8 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def assert_store_matches(path: Path, v: TinyVoc, ids: list[str] | None = None) -> None:
    """The store holds exactly the fixture's bytes and arrays for ``ids`` (default: all)."""
    contents = store_contents(path)
    ids = v.ids if ids is None else ids
    assert sorted(contents) == sorted(ids)
    for sample_id in ids:
        got = contents[sample_id]
        assert got["split"] == v.split_of[sample_id]
        assert got["image"] == v.images[sample_id].read_bytes()
        assert got["size"] == v.sizes[sample_id]
        assert_same_maps(got["proxy"], v.proxy[sample_id])
        assert_same_maps(got["gt"], v.gt.get(sample_id))
        assert_same_maps(got["saliency"], v.saliency[sample_id])
        assert got["tags"] == v.tags.get(sample_id)


# --------------------------------------------------------------------------------------
# help and version
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "commands"),
    [([], ["import", "info", "export", "demo", "score-coarse", "select", "evaluate-scores", "train-scorer",
           "score-fine", "report", "retrain", "predict", "evaluate", "pseudo-label", "score-evidence",
           "score-combined", "score-model", "check", "migrate", "compact"]), (["import"], ["voc", "folder"])],
    ids=["top", "import"],
)
def test_help_lists_every_command_with_a_description(args: list[str], commands: list[str]) -> None:
    result = invoke([*args, "--help"])
    assert_ok(result)
    listed = {}
    section = result.stdout.split("Commands:")[1]
    for line in section.splitlines():
        words = line.split(maxsplit=1)
        if words:
            listed[words[0]] = words[1] if len(words) > 1 else ""
    assert sorted(listed) == sorted(commands)
    for name in commands:
        assert len(listed[name]) > 10, f"{name} has no description"


def test_no_arguments_shows_help() -> None:
    result = invoke([])
    assert "Usage: salcurate" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_version() -> None:
    result = invoke(["--version"])
    assert_ok(result)
    assert result.stdout == f"salcurate {__version__}\n"


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------
def test_import_voc_prints_summary(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    result = invoke(voc_args(tiny_voc, out))
    assert_ok(result)
    text = flat(result.stdout)
    assert "6 samples imported (6 in the store)" in text
    assert "│ train │ 4 │" in text and "│ val │ 2 │" in text
    assert "proxy masks 6, ground truth 5, saliency 6, tags 5, strong 0" in text
    assert "left out" not in text
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    assert_store_matches(out, tiny_voc)


def test_import_voc_one_split(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    result = invoke(voc_args(tiny_voc, out, splits=("val",)))
    assert_ok(result)
    assert "2 samples imported (2 in the store)" in flat(result.stdout)
    assert_store_matches(out, tiny_voc, tiny_voc.splits["val"])


def test_import_voc_single_worker_gives_same_store_content(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    assert_ok(invoke([*voc_args(tiny_voc, out), "--workers", "1"]))
    assert_store_matches(out, tiny_voc)


def test_import_voc_tags_from_gt(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    args = voc_args(tiny_voc, out, splits=("train",))
    del args[args.index("--tags") : args.index("--tags") + 2]
    assert_ok(invoke([*args, "--tags-from-gt"]))
    contents = store_contents(out)
    for sample_id in tiny_voc.splits["train"]:
        assert contents[sample_id]["tags"] == tiny_voc.tags[sample_id]


def test_import_voc_overwrite_replaces_store(tiny_voc: TinyVoc, tiny_store: Path) -> None:
    result = invoke([*voc_args(tiny_voc, tiny_store, splits=("val",)), "--overwrite"])
    assert_ok(result)
    assert_store_matches(tiny_store, tiny_voc, tiny_voc.splits["val"])


def write_plain_folder(v: TinyVoc, root: Path, *, without_mask: str | None = None) -> Path:
    """The tiny dataset again, in the plain folder layout, with grey (not palette) label PNGs
    and tags given by class name."""
    for name in ("images", "masks", "gt", "saliency", "splits"):
        (root / name).mkdir(parents=True)
    for sample_id in v.ids:
        shutil.copyfile(v.images[sample_id], root / "images" / f"{sample_id}.jpg")
        if sample_id != without_mask:
            write_label_png(root / "masks" / f"{sample_id}.png", v.proxy[sample_id], palette=False)
        if sample_id in v.gt:
            write_label_png(root / "gt" / f"{sample_id}.png", v.gt[sample_id], palette=False)
        write_grey_png(root / "saliency" / f"{sample_id}.png", v.saliency[sample_id])
    for split, ids in v.splits.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("\n".join(v.class_names) + "\n")
    lines = ["id,tags"] + [f"{i},{' '.join(v.class_names[k] for k in tags)}" for i, tags in v.tags.items()]
    (root / "tags.csv").write_text("\n".join(lines) + "\n")
    return root


def test_import_folder_matches_voc_import(tiny_voc: TinyVoc, tiny_store: Path, tmp_path: Path) -> None:
    root = write_plain_folder(tiny_voc, tmp_path / "plain")
    out = tmp_path / "folder.h5"
    result = invoke(["import", "folder", root, "-o", out, "--split", "train", "--split", "val"])
    assert_ok(result)
    text = flat(result.stdout)
    assert "6 samples imported" in text
    assert "proxy masks 6, ground truth 5, saliency 6, tags 5, strong 0" in text
    assert_store_matches(out, tiny_voc)
    assert store_contents(out).keys() == store_contents(tiny_store).keys()
    with MaskStore(out) as st:
        assert st.class_names == tiny_voc.class_names


def test_import_folder_without_splits_skips_images_without_mask(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    root = write_plain_folder(tiny_voc, tmp_path / "plain", without_mask="s003")
    out = tmp_path / "folder.h5"
    result = invoke(["import", "folder", root, "-o", out])
    assert_ok(result)
    text = flat(result.stdout)
    assert "5 samples imported" in text
    assert "│ all │ 5 │" in text
    assert "1 images without a proxy annotation left out" in text
    contents = store_contents(out)
    assert sorted(contents) == [i for i in tiny_voc.ids if i != "s003"]
    assert {c["split"] for c in contents.values()} == {"all"}
    for sample_id, got in contents.items():
        assert_same_maps(got["proxy"], tiny_voc.proxy[sample_id])


def test_append_adds_a_split(tiny_voc: TinyVoc, tmp_path: Path) -> None:
    out = tmp_path / "masks.h5"
    assert_ok(invoke(voc_args(tiny_voc, out, splits=("train",))))
    result = invoke([*voc_args(tiny_voc, out, splits=("val",)), "--append"])
    assert_ok(result)
    assert "2 samples imported (6 in the store)" in flat(result.stdout)
    assert_store_matches(out, tiny_voc)

    summary = json.loads(invoke(["info", out, "--json"]).stdout)
    assert summary["splits"] == {"train": 4, "val": 2}
    assert [e["command"] for e in summary["log"]] == ["import voc", "import voc"]
    assert [e["config"]["splits"] for e in summary["log"]] == [["train"], ["val"]]
    assert [e["config"]["append"] for e in summary["log"]] == [False, True]


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------
def test_info_table(tiny_store: Path) -> None:
    before = file_digest(tiny_store)
    result = invoke(["info", tiny_store])
    assert_ok(result)
    text = flat(result.stdout)
    assert f"{tiny_store}: 6 samples, 3 classes, schema v2 (salcurate {__version__})" in text
    assert "splits: train 4, val 2 | maps: proxy 6, gt 5, saliency 6 | tags 5 | strong 0" in text
    for k, name in enumerate(("background", "widget", "gadget", "gizmo")):
        assert f"│ {k} │ {name} │" in text
    assert "run log" in text and "│ import voc │" in text
    assert "score columns" not in text and "selections" not in text  # none yet
    assert result.stderr == ""
    assert file_digest(tiny_store) == before  # reading never writes


def test_info_json(tiny_voc: TinyVoc, tiny_store: Path) -> None:
    result = invoke(["info", tiny_store, "--json"])
    assert_ok(result)
    summary = json.loads(result.stdout)
    assert summary["path"] == str(tiny_store)
    assert summary["schema_version"] == 2
    assert summary["salcurate_version"] == __version__
    assert summary["num_samples"] == 6
    assert summary["num_classes"] == 3
    assert summary["splits"] == {"train": 4, "val": 2}
    assert summary["maps"] == {"proxy": 6, "gt": 5, "saliency": 6}
    assert summary["with_tags"] == 5
    assert summary["strong"] == 0
    assert summary["image_sizes"] == {"height": [16, 32], "width": [16, 32]}
    assert [c["name"] for c in summary["classes"]] == list(tiny_voc.class_names)
    assert [c["index"] for c in summary["classes"]] == [0, 1, 2, 3]

    # class statistics against the arrays the fixture wrote
    for c in summary["classes"]:
        k = c["index"]
        assert c["proxy_pixels"] == sum(int((a == k).sum()) for a in tiny_voc.proxy.values())
        assert c["proxy_images"] == sum(bool((a == k).any()) for a in tiny_voc.proxy.values())
        assert c["gt_pixels"] == sum(int((a == k).sum()) for a in tiny_voc.gt.values())
        assert c["gt_images"] == sum(bool((a == k).any()) for a in tiny_voc.gt.values())
        expected_tagged = None if k == 0 else sum(k in t for t in tiny_voc.tags.values())
        assert c["tagged_images"] == expected_tagged

    assert summary["scores"] == {} and summary["selections"] == {}
    (entry,) = summary["log"]
    assert entry["command"] == "import voc"
    assert entry["salcurate_version"] == __version__
    config = entry["config"]
    assert config["layout"] == "voc"
    assert config["root"] == str(tiny_voc.root)
    assert config["output"] == str(tiny_store)
    assert config["splits"] == ["train", "val"]
    assert config["pseudo_dir"] == str(tiny_voc.proxy_dir)
    assert config["tags_file"] == str(tiny_voc.tags_csv)
    assert config["class_names_file"] == str(tiny_voc.class_names_file)


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize(
    ("options", "ids"),
    [([], ["s001", "s002", "s003", "s004", "s005", "s006"]), (["--split", "val"], ["s005", "s006"]),
     (["--split", "train"], ["s001", "s002", "s003", "s004"])],
    ids=["all", "val", "train"],
)
def test_export_masks(options: list[str], ids: list[str], tiny_voc: TinyVoc, tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    result = invoke(["export", tiny_store, target, *options])
    assert_ok(result)
    assert flat(result.stdout) == flat(f"exported {len(ids)} masks to {target}")
    assert read_lines(target / "ids.txt") == ids
    assert sorted(p.name for p in (target / "masks").iterdir()) == [f"{i}.png" for i in ids]
    assert sorted(p.name for p in target.iterdir()) == ["export.json", "ids.txt", "masks"]
    meta = json.loads((target / "export.json").read_text())
    assert meta["exported"] == len(ids)
    assert meta["config"]["split"] == (options[1] if options else None)
    assert meta["selection_rule"] is None


@pytest.mark.parametrize("kind", ["proxy", "gt"])
def test_exported_masks_are_bit_identical_to_the_input(kind: str, tiny_voc: TinyVoc, tiny_store: Path,
                                                       tmp_path: Path) -> None:
    target = tmp_path / "export"
    result = invoke(["export", tiny_store, target, "--kind", kind])
    assert_ok(result)
    arrays = tiny_voc.proxy if kind == "proxy" else tiny_voc.gt
    if kind == "gt":
        assert "(1 samples without a gt mask skipped)" in flat(result.stdout)
        assert NO_GT_ID not in arrays
    assert read_lines(target / "ids.txt") == sorted(arrays)
    assert sorted(p.stem for p in (target / "masks").iterdir()) == sorted(arrays)
    palette = voc_palette().reshape(-1).tolist()
    for sample_id, expected in arrays.items():
        path = target / "masks" / f"{sample_id}.png"
        labels = read_label_png(path)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, expected)
        assert (labels == 255).any()  # the ignore label survives
        with Image.open(path) as image:  # a VOC palette PNG, like SegmentationClass
            assert image.mode == "P"
            assert image.getpalette()[: len(palette)] == palette


def test_export_images_are_the_original_bytes(tiny_voc: TinyVoc, tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    assert_ok(invoke(["export", tiny_store, target, "--images", "--split", "val"]))
    ids = tiny_voc.splits["val"]
    assert sorted(p.name for p in (target / "images").iterdir()) == [f"{i}.jpg" for i in ids]
    for sample_id in ids:
        assert (target / "images" / f"{sample_id}.jpg").read_bytes() == tiny_voc.images[sample_id].read_bytes()
    assert read_lines(target / "list.txt") == [f"images/{i}.jpg masks/{i}.png" for i in ids]
    for line in read_lines(target / "list.txt"):  # every listed file exists
        assert all((target / part).is_file() for part in line.split())


def test_export_scores_csv(tiny_voc: TinyVoc, tiny_store: Path, tmp_path: Path) -> None:
    target, scores = tmp_path / "export", tmp_path / "scores.csv"
    result = invoke(["export", tiny_store, target, "--scores", scores])
    assert_ok(result)
    assert f"scores in {scores}" in flat(result.stdout)
    with scores.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:2] == ["id", "split"]
    assert rows[1:] == [[i, tiny_voc.split_of[i]] for i in tiny_voc.ids]


def test_export_selection_and_score_columns(tiny_voc: TinyVoc, tiny_store: Path, tmp_path: Path) -> None:
    from salcurate.data.store import transaction

    with transaction(tiny_store, command="test", config={}) as tx:
        tx.put_scores({"quality": np.array([0.5, np.nan, 1.0, 2.0, 3.0, 4.0])}, config={}, command="test")
        tx.put_selection("keep", np.array([1, 0, 1, 0, 1, 0]), rule={"max_bad": 0.5}, command="test")
    target, scores = tmp_path / "export", tmp_path / "scores.csv"
    result = invoke(["export", tiny_store, target, "--selection", "keep", "--scores", scores])
    assert_ok(result)
    assert read_lines(target / "ids.txt") == ["s001", "s003", "s005"]
    assert read_lines(scores) == ["id,split,quality", "s001,train,0.5", "s003,train,1", "s005,val,3"]
    assert json.loads((target / "export.json").read_text())["selection_rule"] == {"max_bad": 0.5}

    summary = json.loads(invoke(["info", tiny_store, "--json"]).stdout)
    assert summary["scores"]["quality"]["computed"] == 5
    assert summary["selections"]["keep"]["kept"] == 3


def test_export_scores_rows_match_exported_masks(tiny_store: Path, tmp_path: Path) -> None:
    target, scores = tmp_path / "export", tmp_path / "scores.csv"
    assert_ok(invoke(["export", tiny_store, target, "--kind", "gt", "--scores", scores]))
    assert [row.split(",")[0] for row in read_lines(scores)[1:]] == read_lines(target / "ids.txt")


def test_export_scores_into_missing_folder(tiny_store: Path, tmp_path: Path) -> None:
    target, scores = tmp_path / "export", tmp_path / "no_such_folder" / "scores.csv"
    result = invoke(["export", tiny_store, target, "--scores", scores])
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and str(scores.parent) in result.stderr
    assert not (target / "export.json").exists()


def test_export_overwrite_writes_into_non_empty_folder(tiny_store: Path, tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    assert_ok(invoke(["export", tiny_store, target, "--split", "val", "--overwrite"]))
    assert (target / "notes.txt").read_text() == "mine\n"
    assert read_lines(target / "ids.txt") == ["s005", "s006"]


# --------------------------------------------------------------------------------------
# the default store path
# --------------------------------------------------------------------------------------
def test_default_store_is_masks_h5_in_current_folder(tiny_voc: TinyVoc, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = voc_args(tiny_voc, "unused")
    del args[args.index("-o") : args.index("-o") + 2]
    assert_ok(invoke(args))
    assert (work / "masks.h5").is_file()
    assert_store_matches(work / "masks.h5", tiny_voc)

    result = invoke(["info"])
    assert_ok(result)
    assert "masks.h5: 6 samples, 3 classes" in flat(result.stdout)

    assert_ok(invoke(["export", "out"]))  # one path: the output folder, store masks.h5
    assert read_lines(work / "out" / "ids.txt") == tiny_voc.ids


def test_default_store_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["info"], ["export", "out"]):
        result = invoke(args)
        assert result.exit_code != 0
        assert result.stderr.startswith("error: masks.h5: no mask store here")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# output with odd paths
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["import", "info", "export"])
def test_paths_with_brackets_are_printed_verbatim(command: str, tiny_voc: TinyVoc, tmp_path: Path) -> None:
    folder = tmp_path / "runs[v2]"
    folder.mkdir()
    store = folder / "masks.h5"
    result = invoke(voc_args(tiny_voc, store))
    assert_ok(result)
    if command == "info":
        result = invoke(["info", store])
    elif command == "export":
        result = invoke(["export", store, folder / "export"])
    assert_ok(result)
    assert "runs[v2]" in "".join(result.stdout.split())


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------
def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(["demo", "--images", "48"])
    assert_ok(result)
    folder = tmp_path / "salcurate-demo"
    assert (folder / "masks.h5").is_file()
    text = flat(result.stdout)
    for step in ("import voc", "info", "pseudo-label", "score-coarse", "evaluate-scores", "train-scorer", "score-fine",
                 "score-evidence", "score-combined", "select", "export", "report", "retrain", "evaluate"):
        assert f"$ salcurate {step}" in text, step
    assert "demo finished" in text and "salcurate-demo/report/index.html" in text
    assert (folder / "report" / "index.html").is_file()
    summary = json.loads(invoke(["info", folder / "masks.h5", "--json"]).stdout)
    assert summary["num_samples"] == 48
    assert sum(summary["splits"].values()) == 48
    assert list(summary["proxies"]) == ["cam"]  # the proxies come from the tags (pseudo-label)
    assert {"sc:cam", "sf:cam", "p:cam", "ce:cam", "q:cam"} <= set(summary["scores"])
    assert "q:cam_best_half" in summary["selections"]  # select's default score: q
    assert "selecting by q:cam" in text
    assert (folder / "runs" / "pseudo-label" / "backbone.pth").is_file() and (folder / "miou.md").is_file()


def _parse_step(argv: list[str]) -> dict[str, object]:
    """Parse one demo step with the real command line, without running it; its option values."""
    import typer

    from salcurate.cli.core import app

    command = typer.main.get_command(app)
    args = list(argv)
    while hasattr(command, "commands"):  # a group: descend to the named command
        name = args.pop(0)
        assert name in command.commands, f"no command {name!r} in {argv}"
        command = command.commands[name]
    with command.make_context(name, args) as ctx:
        return dict(ctx.params)


def test_demo_steps_go_from_tags_to_salnet(tmp_path: Path) -> None:
    from salcurate.data.demo_data import DemoConfig
    from salcurate.demo import demo_commands

    folder = tmp_path / "demo"
    steps = demo_commands(folder, DemoConfig(num_images=8))
    names = [" ".join(s[:2]) if s[0] == "import" else s[0] for s in steps]
    assert names == ["import voc", "info", "pseudo-label", "score-coarse", "evaluate-scores", "train-scorer",
                     "score-fine", "evaluate-scores", "score-evidence", "score-combined", "evaluate-scores", "select",
                     "select", "export", "report", "retrain", "evaluate"]
    by_name = {" ".join(s[:2]) if s[0] == "import" else s[0]: s for s in steps}
    imported = by_name["import voc"]
    assert "--pseudo" not in imported  # no proxies on disk: they come from the tags
    assert imported[imported.index("--tags") + 1] == str(folder / "voc" / "tags.csv")
    assert imported[imported.index("--saliency") + 1] == str(folder / "voc" / "Saliency")
    cam = by_name["pseudo-label"]
    assert cam[cam.index("--proxy") + 1] == "cam" and cam[cam.index("-o") + 1] == str(folder / "runs/pseudo-label")
    assert cam[cam.index("--backbone") + 1] == "resnet18" and cam[cam.index("--backbone-weights") + 1] == "none"
    retrain = by_name["retrain"]
    assert retrain[retrain.index("--backbone-weights") + 1] == str(folder / "runs/pseudo-label/backbone.pth")
    assert retrain[retrain.index("--max-iter") + 1] == "30"
    assert all("--proxy" not in s for s in steps if s[0] != "pseudo-label")  # the only set is found by default
    for argv in steps:  # every step is a valid command line (parsed, not run)
        params = _parse_step(argv)
        assert params, argv
    # score-fine uses the shipped scorer when there is one, else the demo's own short training
    shipped = tmp_path / "scorer.pt"
    assert by_name["score-fine"][by_name["score-fine"].index("--scorer") + 1] == str(folder / "scorer.pt")
    shipped.write_bytes(b"x")
    fine = next(s for s in demo_commands(folder, DemoConfig(num_images=8), shipped_scorer=shipped)
                if s[0] == "score-fine")
    assert fine[fine.index("--scorer") + 1] == str(shipped)


def test_demo_console_script_loads_the_steps_commands(tmp_path: Path) -> None:
    """``salcurate demo`` loads only its own module; it must register its steps' commands itself."""
    import subprocess
    import sys

    code = (
        "import typer\n"
        "from pathlib import Path\n"
        "from salcurate.cli import load_commands\n"
        "app = load_commands(['demo'])\n"
        "from salcurate.cli.demo import steps_app_for\n"
        "from salcurate.data.demo_data import DemoConfig\n"
        "from salcurate.demo import demo_commands\n"
        "steps = tuple(tuple(s) for s in demo_commands(Path('d'), DemoConfig(num_images=8)))\n"
        "names = set(typer.main.get_command(steps_app_for(steps)).commands)\n"
        "missing = {s[0] for s in steps} - names\n"
        "assert not missing, missing\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_demo_refuses_too_few_images(tmp_path: Path) -> None:
    result = invoke(["demo", tmp_path / "demo", "--images", "7"])
    assert result.exit_code == 2
    assert "--images" in result.stderr
    assert not (tmp_path / "demo").exists()
