"""Command-line forms that ``config_command`` derives beyond plain options: repeatable options,
a command's own flags and help texts, settings fixed by the command, and ``[STORE] OUT``."""

from __future__ import annotations

import dataclasses

import typer
from typer.testing import CliRunner

from salcurate import config as cfg
from salcurate.cli.core import config_command, flags_of
from salcurate.errors import InputError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    store: str = cfg.store_setting()
    out: str = cfg.setting(help="Where results go.", argument=True, metavar="OUT")
    mode: str = cfg.setting("a", "The mode.")
    splits: tuple[str, ...] = cfg.setting((), "Splits (repeatable).", flag="--split", multiple=True)
    source: str | None = cfg.setting(None, "Where inputs come from.", flag="--source")


def _app(seen: list[Job]) -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None)  # plain help, as salcurate's app

    @app.callback()
    def _root() -> None:
        """Test app."""

    @config_command(app, "run", Job)
    def run(config: Job) -> None:
        """Run a job."""
        seen.append(config)

    @config_command(app, "fixed", Job, fixed={"mode": "b"}, flags={"source": "--from"},
                    helps={"source": "Inputs (default: here)."})
    def fixed(config: Job) -> None:
        """Run a job in mode b."""
        seen.append(config)
        if config.source == "bad":
            raise InputError("source 'bad' is not usable; give another source", param="source")

    return app


def _invoke(args: list[str], seen: list[Job] | None = None):
    return CliRunner().invoke(_app([] if seen is None else seen), args, terminal_width=200)


def test_repeatable_option_gives_a_tuple() -> None:
    seen: list[Job] = []
    res = _invoke(["run", "o", "--split", "train", "--split", "val"], seen)
    assert res.exit_code == 0, res.output
    assert seen == [Job(out="o", splits=("train", "val"))]


def test_repeatable_option_left_out_keeps_the_default() -> None:
    seen: list[Job] = []
    assert _invoke(["run", "o"], seen).exit_code == 0
    assert seen[0].splits == ()


def test_optional_argument_before_a_required_one() -> None:
    seen: list[Job] = []
    assert _invoke(["run", "o"], seen).exit_code == 0
    assert _invoke(["run", "s.h5", "o"], seen).exit_code == 0
    assert [(j.store, j.out) for j in seen] == [(cfg.DEFAULT_STORE, "o"), ("s.h5", "o")]


def test_optional_argument_too_many_values_is_one_error_line() -> None:
    res = _invoke(["run", "a", "b", "c"])
    assert res.exit_code == 2
    assert res.stderr == "error: expected [STORE] OUT, got 3 paths; give at most 2\n"


def test_optional_argument_none_given() -> None:
    res = _invoke(["run"])
    assert res.exit_code == 2 and "[STORE] OUT" in res.output


def test_help_of_grouped_arguments_and_overrides() -> None:
    text = " ".join(_invoke(["run", "--help"]).output.split())
    assert "[STORE] OUT" in text and "Where results go." in text and "The mask store" in text
    assert "--source" in text and "--from" not in text and "--mode" in text
    text = " ".join(_invoke(["fixed", "--help"]).output.split())
    assert "--from" in text and "Inputs (default: here)." in text
    assert "--source" not in text and "--mode" not in text  # fixed by the command: not offered


def test_fixed_value_and_own_flag() -> None:
    seen: list[Job] = []
    res = _invoke(["fixed", "o", "--from", "there"], seen)
    assert res.exit_code == 0, res.output
    assert seen == [Job(out="o", mode="b", source="there")]


def test_error_names_the_commands_own_flag() -> None:
    res = _invoke(["fixed", "o", "--from", "bad"])
    assert res.exit_code == 2
    assert res.stderr == "error: --from 'bad' is not usable; give another --from\n"


def test_flags_of_with_overrides() -> None:
    assert flags_of(Job)["source"] == "--source"
    assert flags_of(Job, flags={"source": "--from"})["source"] == "--from"
    assert flags_of(Job)["out"] == "OUT" and flags_of(Job)["splits"] == "--split"
