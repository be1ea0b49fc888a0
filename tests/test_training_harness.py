"""The training harness (recipe, checkpoint, interrupt, log, precision) and the training commands'
settings: every setting a CLI option with help, ``--config FILE.toml`` with command-line overrides,
the saved ``config.toml`` read back to the same config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_ok, file_digest, invoke, put_selection

from salcurate import config as cfg
from salcurate.config import Choice, choice, setting
from salcurate.data.store import copy_store
from salcurate.errors import InputError, SalcurateError
from salcurate.events import Events
from salcurate.training import harness
from salcurate.training.retrain import Backbone, RetrainConfig
from salcurate.training.scorer import TrainScorerConfig


# -- harness pieces ------------------------------------------------------------------------------
class Colour(Choice):
    red = "red"
    blue = "blue"


@dataclasses.dataclass(frozen=True)
class Inner:
    depth: int = setting(3, "Depth.")
    seed: int = setting(0, "Seed.")


@dataclasses.dataclass(frozen=True)
class Toy:
    lr: float = setting(0.1, "Learning rate.")
    colour: Colour = setting(Colour.red, "Colour.")
    workers: int = setting(2, "Workers.", run_only=True)
    output: str = setting("out.pt", "Output.", run_only=True)
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_recipe_is_the_config_less_run_only_settings_plus_data() -> None:
    r = harness.recipe_of(Toy(colour=Colour.blue, workers=8), store_ids="abc", world_size=2)
    assert r == {"lr": 0.1, "colour": "blue", "depth": 3, "seed": 0, "store_ids": "abc", "world_size": 2}
    assert harness.recipe_of(Toy(workers=1, output="x")) == harness.recipe_of(Toy(workers=9, output="y"))


def test_recipe_mismatch_names_the_keys_that_differ(tmp_path: Path) -> None:
    saved = harness.recipe_of(Toy(), store_ids="abc")
    harness.check_recipe(saved, harness.recipe_of(Toy(workers=5), store_ids="abc"), tmp_path)  # run-only: fine
    with pytest.raises(InputError, match=r"other settings \(colour, depth differ\);") as info:
        harness.check_recipe(saved, harness.recipe_of(Toy(colour=Colour.blue, inner=Inner(depth=4)), store_ids="abc"),
                             tmp_path / "ckpt.pt")
    assert "ckpt.pt: the checkpoint was trained with other settings or data" in str(info.value)
    assert "resume" in info.value.params and "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"other data \(the store's samples differ\)"):
        harness.check_recipe(saved, harness.recipe_of(Toy(), store_ids="xyz"), tmp_path)


def _checkpoint(path: Path, recipe: dict[str, Any]) -> harness.Checkpoint:
    return harness.Checkpoint(path, recipe, write=lambda p, s: torch.save(s, p),
                              read=lambda p: torch.load(p, weights_only=True))


def test_checkpoint_resumes_only_its_own_recipe(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    ckpt = _checkpoint(path, harness.recipe_of(Toy()))
    assert ckpt.resume(False) is None
    with pytest.raises(InputError, match="no checkpoint to resume from; drop resume") as info:
        ckpt.resume(True)
    assert info.value.params == ("resume",)
    ckpt.save({"epoch": 3})
    assert torch.load(path, weights_only=True) == {"epoch": 3, "recipe": harness.recipe_of(Toy())}
    assert ckpt.resume(True)["epoch"] == 3
    with pytest.raises(InputError, match="already holds a run .* pass resume"):
        ckpt.resume(False, refuse_existing=True)
    with pytest.raises(InputError, match=r"\(lr differ\)"):
        _checkpoint(path, harness.recipe_of(Toy(lr=0.5))).resume(True)
    other = harness.Checkpoint(tmp_path / "b.pt", {}, write=lambda p, s: torch.save(s, p), read=torch.load, main=False)
    other.save({"epoch": 1})  # not the main process: nothing written
    assert not (tmp_path / "b.pt").exists()


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_continue(tmp_path: Path) -> None:
    saved = []

    def save() -> str:
        saved.append(True)
        return "at iteration 7"

    with pytest.raises(SalcurateError) as info:
        with harness.checkpoint_on_interrupt(save, tmp_path / "ckpt.pt"):
            raise KeyboardInterrupt
    assert saved == [True]
    where = tmp_path / "ckpt.pt"
    assert str(info.value) == f"interrupted at iteration 7; checkpoint saved to {where}: continue with resume"
    assert info.value.params == ("resume",)
    with pytest.raises(RuntimeError):  # other errors pass through, nothing saved
        with harness.checkpoint_on_interrupt(save, tmp_path / "ckpt.pt"):
            raise RuntimeError("power cut")
    assert saved == [True]


def test_run_log_writes_json_lines_and_reports_metrics(tmp_path: Path) -> None:
    class Seen(Events):
        records: list[dict] = []

        def metrics(self, record: dict) -> None:
            self.records.append(record)

    events = Seen()
    run_log = harness.RunLog(tmp_path / "log.jsonl", step="epoch", tensorboard=None, events=events)
    run_log.write({"epoch": 1, "loss": 0.5})
    run_log.write({"epoch": 2, "loss": 0.25})
    run_log.close()
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines == events.records == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    quiet = harness.RunLog(tmp_path / "other.jsonl", step="epoch", main=False)
    quiet.write({"epoch": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_precision_defaults_and_model_preparation() -> None:
    cpu = harness.Precision(torch.device("cpu"))
    assert (cpu.amp, cpu.channels_last) == (False, False)
    assert cpu.to_dict() == {"device_used": "cpu", "amp_used": False, "channels_last_used": False}
    forced = harness.Precision(torch.device("cpu"), amp=True, channels_last=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    net = harness.prepare_model(model, forced)
    assert net is model and model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = forced.inputs(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with forced.autocast():
        assert net(x).dtype == torch.bfloat16


def test_write_config_saves_toml_that_reads_back(tmp_path: Path) -> None:
    config = Toy(lr=0.5, colour=Colour.blue, inner=Inner(depth=7))
    harness.write_config(tmp_path / "run" / "config.toml", config, command="toy", json_path=tmp_path / "run" / "c.json",
                         facts={"toy": cfg.to_dict(config)})
    text = (tmp_path / "run" / "config.toml").read_text()
    assert text.startswith("# salcurate toy: the resolved settings") and "[inner]" in text
    assert cfg.from_dict(Toy, cfg.load_toml(tmp_path / "run" / "config.toml")) == config
    assert json.loads((tmp_path / "run" / "c.json").read_text())["toy"]["colour"] == "blue"


def test_choice_accepts_strings_and_names_the_setting() -> None:
    assert choice(Colour, "blue", "colour") is Colour.blue
    with pytest.raises(InputError, match="colour must be one of red, blue, got 'green'") as info:
        choice(Colour, "green", "colour")
    assert info.value.params == ("colour",)
    with pytest.raises(InputError, match="backbone must be one of vgg16, resnet18, resnet50, resnet101, got 'alexnet'"):
        choice(Backbone, "alexnet", "backbone")


# -- one declaration per setting ---------------------------------------------------------------
@pytest.mark.parametrize(("command", "config_cls"), [("retrain", RetrainConfig), ("train-scorer", TrainScorerConfig)])
def test_every_setting_is_a_cli_option_with_help(command: str, config_cls: type) -> None:
    from salcurate.cli.core import flags_of

    result = invoke([command, "--help"])
    assert_ok(result)
    text = " ".join(result.stdout.split())
    flags = flags_of(config_cls)
    for fi in cfg.fields(config_cls):
        assert fi.meta.get("cli", True), fi.name
        assert fi.meta.get("help"), f"{fi.name} has no help text"
        assert fi.meta["help"].split()[0] in text, fi.name
        assert flags[fi.name] in text, fi.name
    assert "--config" in text


def test_current_flags_are_kept() -> None:
    from salcurate.cli.core import flags_of

    flags = flags_of(RetrainConfig)
    assert (flags["lam"], flags["use_strong"], flags["freeze_bn"], flags["compile"], flags["store"]) == (
        "--lambda", "--strong", "--freeze-bn", "--compile", "STORE")
    assert cfg.fields(RetrainConfig)[2].meta["short"] == "-o"
    scorer = flags_of(TrainScorerConfig)
    assert (scorer["seed"], scorer["positive_min"], scorer["proportions"]) == ("--seed", "--positive-min",
                                                                              "--proportions")


# -- --config FILE.toml ------------------------------------------------------------------------
TINY_TOML = """
selection = "kept3"
backbone = "resnet18"
backbone_weights = "none"
crop = 24
batch_size = 2
lr = 1e-3
max_iter = 3
workers = 0
tensorboard = false
log_every = 2
"""


@pytest.fixture
def store(tiny_store: Path) -> Path:
    put_selection(tiny_store, "kept3", [1, 1, 0, 1, 1, 1])
    return tiny_store


@pytest.mark.usefixtures("one_torch_thread")
def test_retrain_config_file_with_overrides_round_trips(store: Path, tmp_path: Path) -> None:
    settings = tmp_path / "retrain.toml"
    settings.write_text(TINY_TOML)
    out = tmp_path / "run"
    result = invoke(["retrain", store, "--config", settings, "-o", out, "--max-iter", "2", "--no-flip"])
    assert_ok(result)
    assert f"model saved to {out / 'model.pt'} after 2 iterations" in result.stdout  # the command line wins
    saved = cfg.from_dict(RetrainConfig, cfg.load_toml(out / "config.toml"))
    expected = RetrainConfig(store=str(store), output=str(out), selection="kept3", backbone="resnet18",
                             backbone_weights="none", crop=24, batch_size=2, lr=1e-3, max_iter=2, workers=0,
                             tensorboard=False, log_every=2, flip=False).resolved()
    assert saved == expected
    assert json.loads((out / "config.json").read_text())["retrain"] == {
        **cfg.to_dict(expected), "world_size": 1, "device_used": "cpu", "amp_used": False, "channels_last_used": False,
        "bn_frozen": False, "warm_start": None}
    # the saved file runs the same training again: the same weights
    assert_ok(invoke(["retrain", "--config", out / "config.toml", "-o", tmp_path / "again"]))
    from salcurate.nn.salnet import read_model_file

    first, second = (read_model_file(p / "model.pt")["state_dict"] for p in (out, tmp_path / "again"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_retrain_config_file_errors_are_one_line(store: Path, tmp_path: Path) -> None:
    before = file_digest(store)
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TOML + "colour = 'red'\n")
    result = invoke(["retrain", store, "--config", bad, "-o", tmp_path / "run"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "unknown setting(s) colour" in result.stderr
    bad.write_text(TINY_TOML + "crop = [")
    result = invoke(["retrain", store, "--config", bad])
    assert result.exit_code == 2 and "not valid TOML" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = invoke(["retrain", store, "--config", tmp_path / "none.toml"])
    assert result.exit_code == 2 and "no such config file" in result.stderr
    assert file_digest(store) == before


@pytest.mark.usefixtures("one_torch_thread")
def test_train_scorer_config_file_with_overrides_round_trips(demo_scored_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "masks.h5"
    copy_store(demo_scored_store, store)
    settings = tmp_path / "scorer.toml"
    settings.write_text('epochs = 1\ninput_size = 32\nwidth = 8\nchannels = 12\nhidden = 6\nlr = 1e-3\n'
                        'workers = 0\n\n[synthesis]\nscale = 2.0\nseed = 5\n')
    out = tmp_path / "s.pt"
    result = invoke(["train-scorer", store, "--config", settings, "-o", out, "--lr", "0.002", "--seed", "3"])
    assert_ok(result)
    saved = cfg.from_dict(TrainScorerConfig, cfg.load_toml(out.with_suffix(".toml")))
    expected = TrainScorerConfig(store=str(store), output=str(out), epochs=1, input_size=32, width=8, channels=12,
                                 hidden=6, lr=0.002, workers=0,
                                 synthesis=dataclasses.replace(TrainScorerConfig().synthesis, scale=2.0, seed=3))
    assert saved == expected and saved.seed == 3
    from salcurate.nn.scorer import load_checkpoint

    assert load_checkpoint(out)[2]["extra"]["train_config"] == cfg.to_dict(expected)
