"""salcurate.config (settings declared once) and the CLI options derived from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from salcurate import config as cfg
from salcurate.cli.core import config_command, flag_message, flags_of
from salcurate.errors import InputError, SalcurateError


class Colour(cfg.Choice):
    red = "red"
    blue = "blue"


@dataclasses.dataclass(frozen=True)
class Inner:
    depth: int = cfg.setting(3, "How deep.", min=1)
    scales: tuple[float, ...] = cfg.setting((0.5, 1.0), "Scales.")


@dataclasses.dataclass(frozen=True)
class Outer:
    store: str = cfg.store_setting()
    batch_size: int = cfg.setting(8, "Images per step.", min=1)
    colour: Colour = cfg.setting(Colour.red, "A colour.")
    lr: float | None = cfg.setting(None, "Learning rate (default: the paper's).")
    flip: bool = cfg.setting(True, "Mirror.", flag="--flip/--no-flip")
    output: str = cfg.setting("out", "Where.", short="-o", run_only=True)
    secret: int = cfg.setting(1, "Not on the command line.", cli=False)
    inner: Inner = cfg.setting(default_factory=Inner)


# -- smoke and shapes ---------------------------------------------------------------------
def test_fields_flatten_nested_in_order() -> None:
    names = [f.name for f in cfg.fields(Outer)]
    assert names == ["store", "batch_size", "colour", "lr", "flip", "output", "secret", "depth", "scales"]
    assert cfg.fields(Outer)[-1].path == ("inner", "scales")
    assert cfg.run_only_names(Outer) == ("output",)


def test_duplicate_names_in_a_nested_config_are_a_programming_error() -> None:
    @dataclasses.dataclass(frozen=True)
    class Clash:
        depth: int = cfg.setting(1, "x")
        inner: Inner = cfg.setting(default_factory=Inner)

    with pytest.raises(TypeError, match="declared twice"):
        cfg.fields(Clash)


def test_choice_behaves_as_its_value() -> None:
    assert Colour.red == "red" and f"{Colour.red}" == "red" and str(Colour.blue) == "blue"
    assert Colour.values() == ("red", "blue")


# -- values -------------------------------------------------------------------------------
def test_to_dict_is_plain_data() -> None:
    d = cfg.to_dict(Outer())
    assert d["colour"] == "red" and type(d["colour"]) is str
    assert d["inner"] == {"depth": 3, "scales": [0.5, 1.0]}


def test_from_dict_round_trip_and_partial() -> None:
    c = Outer(batch_size=4, colour=Colour.blue, lr=0.1, inner=Inner(depth=5, scales=(1.0,)))
    assert cfg.from_dict(Outer, cfg.to_dict(c)) == c
    assert cfg.from_dict(Outer, {"inner": {"depth": 2}}) == Outer(inner=Inner(depth=2))


@pytest.mark.parametrize(("data", "message"), [
    ({"batch": 3}, r"unknown setting\(s\) batch; known: store, batch_size"),
    ({"batch_size": "many"}, r"batch_size must be a whole number, got 'many'"),
    ({"batch_size": 2.5}, r"batch_size must be a whole number, got 2.5"),
    ({"batch_size": True}, r"batch_size must be a whole number"),
    ({"colour": "green"}, r"colour must be one of red, blue, got 'green'"),
    ({"lr": "fast"}, r"lr must be a number, got 'fast'"),
    ({"flip": "yes"}, r"flip must be true or false, got 'yes'"),
    ({"inner": 3}, r"config.inner must be a table of settings"),
    ({"inner": {"scales": "a,b"}}, r"config.inner.scales must be a number, got 'a'"),
])
def test_from_dict_bad_values_are_one_line_input_errors(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        cfg.from_dict(Outer, data)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # InputError is a ValueError for Python users


def test_convert_tuples_from_text() -> None:
    assert cfg.convert("0.5, 0.75,1", tuple[float, ...], "scales") == (0.5, 0.75, 1.0)
    assert cfg.convert([1, 2, 3, 4], tuple[int, int, int, int], "p") == (1, 2, 3, 4)
    with pytest.raises(InputError, match="p must hold 4 values, got 3"):
        cfg.convert([1, 2, 3], tuple[int, int, int, int], "p")


# -- TOML ---------------------------------------------------------------------------------
def test_toml_round_trip(tmp_path: Path) -> None:
    c = Outer(batch_size=2, colour=Colour.blue, output='a "quoted" path', inner=Inner(depth=4, scales=(0.25, 2.0)))
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml(c, header="resolved settings\nof a test"))
    text = path.read_text()
    assert text.startswith("# resolved settings\n# of a test\n") and "# lr = (unset)" in text and "[inner]" in text
    assert cfg.from_dict(Outer, cfg.load_toml(path)) == c


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such config file"),
    ("batch_size = ", "not valid TOML"),
])
def test_load_toml_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        cfg.load_toml(path)


def test_nest_and_merge() -> None:
    nested = cfg.nest(Outer, {"depth": 2, "batch_size": 3})
    assert nested == {"inner": {"depth": 2}, "batch_size": 3}
    assert cfg.merge({"inner": {"depth": 1, "scales": [1]}, "lr": 0.1}, nested) == \
        {"inner": {"depth": 2, "scales": [1]}, "lr": 0.1, "batch_size": 3}


# -- the CLI derived from a config --------------------------------------------------------
def _app(seen: list[Outer]) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test app."""

    @config_command(app, "go", Outer, config_file=True)
    def go(config: Outer) -> None:
        """Run with a config."""
        seen.append(config)
        if config.batch_size == 13:
            raise InputError("batch_size 13 is unlucky; choose another batch_size", param="batch_size")

    return app


def test_cli_options_come_from_the_fields() -> None:
    res = CliRunner().invoke(_app([]), ["go", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for text in ("--batch-size", "Images per step.", "--flip", "--no-flip", "-o", "--depth", "--scales",
                 "red", "blue", "STORE", "--config"):
        assert text in res.output, text
    assert "--secret" not in res.output


def test_cli_builds_the_config() -> None:
    seen: list[Outer] = []
    res = CliRunner().invoke(_app(seen), ["go", "my.h5", "--batch-size", "2", "--colour", "blue", "--no-flip",
                                          "--scales", "1,2", "-o", "x"])
    assert res.exit_code == 0, res.output
    assert seen == [Outer(store="my.h5", batch_size=2, colour=Colour.blue, flip=False, output="x",
                          inner=Inner(scales=(1.0, 2.0)))]


def test_cli_choice_typo_gets_typers_message() -> None:
    res = CliRunner().invoke(_app([]), ["go", "--colour", "green"])
    assert res.exit_code == 2 and "green" in res.output


def test_cli_config_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('batch_size = 5\ncolour = "blue"\nsecret = 7\n[inner]\ndepth = 9\n')
    seen: list[Outer] = []
    res = CliRunner().invoke(_app(seen), ["go", "--config", str(path), "--batch-size", "6"])
    assert res.exit_code == 0, res.output
    assert seen == [Outer(batch_size=6, colour=Colour.blue, secret=7, inner=Inner(depth=9))]


def test_cli_config_file_unknown_key_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("batch = 5\n")
    res = CliRunner().invoke(_app([]), ["go", "--config", str(path)])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and "unknown setting(s) batch" in res.stderr


def test_cli_says_flags_where_the_library_says_parameters() -> None:
    res = CliRunner().invoke(_app([]), ["go", "--batch-size", "13"])
    assert res.exit_code == 2
    assert res.stderr == "error: --batch-size 13 is unlucky; choose another --batch-size\n"


def test_flag_message_rewrites_only_listed_parameters() -> None:
    exc = SalcurateError("lr and batch_size are wrong; see batch_sizes", param="batch_size")
    assert flag_message(exc, flags_of(Outer)) == "lr and --batch-size are wrong; see batch_sizes"
    assert flags_of(Outer)["store"] == "STORE" and flags_of(Outer)["flip"] == "--flip"
