"""What every command of the CLI shares: the app, error lines, progress, options from configs.

A command is a thin wrapper made with :func:`config_command`: its options are derived from the
fields of the command's config dataclass (help, flag, default, choices declared once, in
``salcurate.config.setting``), the wrapper receives the built config, calls the stage's
``run(config, events=...)`` and renders the result.  Only the CLI prints, exits and owns the
progress display.  Bad input raises :class:`~salcurate.errors.SalcurateError`, shown as one
``error:`` line (parameter names turned into this command's flags) with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import re
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from salcurate import config as cfg
from salcurate._version import __version__
from salcurate.errors import InputError, SalcurateError
from salcurate.events import Events

app = typer.Typer(
    name="salcurate",
    help="Score, select and curate noisy proxy annotations (pseudo-label masks) for semantic segmentation (SAL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
import_app = typer.Typer(help="Import a dataset (VOC or plain folder) into a mask store.", no_args_is_help=True)
app.add_typer(import_app, name="import")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("salcurate")

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------
def flag_message(exc: SalcurateError, flags: dict[str, str]) -> str:
    """The error's message with the parameter names it lists written as this command's flags."""
    message = str(exc)
    if "Original Traceback" in message:  # re-raised from a data-loader worker: keep the original message
        heads = list(re.finditer(r"[\w.]*(?:Error|Exception): ", message))
        if heads:
            message = message[heads[-1].end():].strip()
    for name in exc.params:
        flag = flags.get(name)
        if flag:
            # a whole word only: not inside a path (/x/plot.png), an identifier or brackets (salcurate[crf])
            message = re.sub(rf"(?<![\w\-./\[]){re.escape(name)}(?![\w\-/\]]|\.\w)", flag, message)
    return message


def command(fn: F, *, flags: dict[str, str] | None = None) -> F:
    """Turn library errors into one ``error:`` line and a non-zero exit, without traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SalcurateError as exc:
            sys.stderr.write(f"error: {flag_message(exc, flags or {})}\n")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------
class _RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.0f}/s")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``advance(n)``.  Hidden when stderr is not a terminal."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               _RateColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class RichEvents(Events):
    """The CLI's :class:`~salcurate.events.Events`: a progress bar that appears once the command
    says how much work there is, notes printed as lines, an optional status text from
    ``advance(**info)`` via ``status``.

    Use as a context manager; ``show=False`` (a non-main rank under torchrun) shows nothing.
    """

    def __init__(self, description: str, *, status: Callable[[dict[str, Any]], str] | None = None,
                 on_metrics: Callable[[dict[str, Any]], None] | None = None, show: bool = True) -> None:
        self.description, self.status, self.on_metrics, self.show = description, status, on_metrics, show
        self._stack = contextlib.ExitStack()
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> RichEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def start(self, total: int, done: int = 0, *, label: str = "") -> None:
        if not total or not self.show:
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   _RateColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        if self._bar is None:
            self._bar = self._stack.enter_context(
                Progress(*columns, console=err, transient=False, disable=not err.is_terminal))
        self._task = self._bar.add_task(label or self.description, total=total, completed=done, info="")

    def advance(self, n: int = 1, **info: Any) -> None:
        if self._bar is None or self._task is None:
            return
        text = self.status(info) if (self.status and info) else None
        if text is None:
            self._bar.advance(self._task, n)
        else:
            self._bar.update(self._task, advance=n, info=text)

    def note(self, message: str) -> None:
        if self.show:
            out.print(message, markup=False)

    def metrics(self, record: dict[str, Any]) -> None:
        if self.show and self.on_metrics:
            self.on_metrics(record)


# ------------------------------------------------------------------------------------------
# Options derived from a config dataclass
# ------------------------------------------------------------------------------------------
DEFAULT_STORE = "masks.h5"


def _cli_type(t: Any, multiple: bool = False) -> Any:
    """The type Typer parses for a config field (tuples are typed as comma-separated text, or as a
    repeatable option with ``multiple``)."""
    inner, optional = cfg._unwrap_optional(t)
    if typing.get_origin(inner) is tuple:
        if multiple:
            args = typing.get_args(inner)
            return Optional[list[args[0] if args else str]]  # type: ignore[misc]  # noqa: UP045
        inner = str
    return Optional[inner] if optional else inner  # noqa: UP045 (Typer reads typing.Optional)


def _cli_default(fi: cfg.FieldInfo) -> Any:
    d = fi.default
    if fi.meta.get("multiple"):
        return None  # not given: the setting's default (or the config file's value)
    if isinstance(d, tuple):
        return ",".join(str(v) for v in d)
    return d


def _text_list(fi: cfg.FieldInfo, text: str) -> Any:
    """A tuple setting typed as comma-separated text, as a tuple; text that does not parse is one
    error naming the format (``--scales expects numbers separated by commas like 0.5,0.75,1.0``)."""
    try:
        return cfg.convert(text, fi.type, fi.name)
    except InputError:
        args = typing.get_args(cfg._unwrap_optional(fi.type)[0])
        what = {int: "whole numbers", float: "numbers"}.get(args[0] if args else str, "values")
        like = f" like {_cli_default(fi)}" if isinstance(fi.default, tuple) and fi.default else ""
        raise InputError(f"{fi.name} expects {what} separated by commas{like}, got {text!r}", param=fi.name) from None


def _param_for(fi: cfg.FieldInfo) -> inspect.Parameter:
    meta = fi.meta
    help_text = meta.get("help") or None
    if meta.get("argument"):
        info: Any = typer.Argument(help=help_text, metavar=meta.get("metavar"), show_default=True)
    else:
        decls = [fi.flag] + ([meta["short"]] if meta.get("short") else [])
        kw: dict[str, Any] = {"help": help_text}
        if meta.get("min") is not None:
            kw["min"] = meta["min"]
        if meta.get("max") is not None:
            kw["max"] = meta["max"]
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        info = typer.Option(*decls, **kw)
    default = _cli_default(fi)
    if default is cfg.dataclasses.MISSING:
        default = inspect.Parameter.empty
    return inspect.Parameter(fi.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[_cli_type(fi.type, bool(meta.get("multiple"))), info])


def _overridden(fields: list[cfg.FieldInfo], flags: dict[str, str] | None,
                helps: dict[str, str] | None) -> list[cfg.FieldInfo]:
    """``fields`` with one command's own flags and help texts laid over their declarations."""
    flags, helps = flags or {}, helps or {}
    out = []
    for fi in fields:
        meta = dict(fi.meta)
        if fi.name in flags:
            meta["flag"] = flags[fi.name]
        if fi.name in helps:
            meta["help"] = helps[fi.name]
        out.append(dataclasses.replace(fi, meta=meta))
    return out


def cli_fields(config_cls: type, exclude: tuple[str, ...] = (), *, flags: dict[str, str] | None = None,
               helps: dict[str, str] | None = None) -> list[cfg.FieldInfo]:
    fields = [fi for fi in cfg.fields(config_cls) if fi.meta.get("cli", True) and fi.name not in exclude]
    return _overridden(fields, flags, helps)


def flags_of(config_cls: type, *, flags: dict[str, str] | None = None) -> dict[str, str]:
    """``{parameter name: flag}`` of a config's command-line settings (arguments by metavar);
    ``flags``: a command's own flags for some settings (see :func:`config_command`)."""
    out: dict[str, str] = {}
    for fi in _overridden(cfg.fields(config_cls), flags, None):
        if not fi.meta.get("cli", True):
            continue
        out[fi.name] = (fi.meta.get("metavar") or fi.name.upper()) if fi.meta.get("argument") else fi.primary_flag
    return out


def _leading_optional(leafs: list[cfg.FieldInfo]) -> list[cfg.FieldInfo]:
    """The positional arguments when an optional one comes before a required one (``[STORE] OUT``),
    which Click cannot parse one by one; else ``[]``."""
    args = [fi for fi in leafs if fi.meta.get("argument")]
    required = [k for k, fi in enumerate(args) if fi.default is dataclasses.MISSING]
    if required and any(fi.default is not dataclasses.MISSING for fi in args[: required[-1]]):
        return args
    return []


def _arguments_param(args: list[cfg.FieldInfo]) -> tuple[inspect.Parameter, str]:
    """One variable-length argument standing for ``args`` (e.g. ``[STORE] OUT``), and its metavar."""
    names = [fi.meta.get("metavar") or fi.name.upper() for fi in args]
    metavar = " ".join(n if fi.default is dataclasses.MISSING else f"[{n}]" for n, fi in zip(names, args))
    help_text = " ".join(f"{n}: {fi.meta.get('help') or ''}".strip() for n, fi in zip(names, args))
    info = typer.Argument(metavar=metavar, help=help_text, show_default=False)
    return inspect.Parameter(_ARGUMENTS, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[list[str], info]), metavar


def _spread_arguments(values: list[str], args: list[cfg.FieldInfo], metavar: str) -> dict[str, str]:
    """The values of a ``[STORE] OUT`` argument by setting: optional ones are filled only when
    there are values left over for them, from the left."""
    n_required = sum(fi.default is dataclasses.MISSING for fi in args)
    if not n_required <= len(values) <= len(args):
        raise InputError(f"expected {metavar}, got {len(values)} paths; give at most {len(args)}")
    spare = len(values) - n_required
    out, it = {}, iter(values)
    for fi in args:
        if fi.default is dataclasses.MISSING:
            out[fi.name] = next(it)
        elif spare:
            out[fi.name] = next(it)
            spare -= 1
    return out


_ARGUMENTS = "cli_arguments"


ConfigFileOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--config", help="A TOML file of settings (the run's saved config.toml works); options given here override it.")]


def config_command(typer_app: typer.Typer, name: str, config_cls: type[C], *, config_file: bool = False,
                   exclude: tuple[str, ...] = (), fixed: dict[str, Any] | None = None,
                   flags: dict[str, str] | None = None, helps: dict[str, str] | None = None,
                   ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(config, **extras)`` as command ``name`` with options derived from ``config_cls``.

    ``fn``'s own keyword parameters after the first (presentation options such as ``--json``)
    are added to the derived ones.  ``config_file``: add ``--config FILE.toml``; values given on
    the command line override the file's, the file overrides the defaults.  ``exclude``: fields
    not offered on this command line; ``fixed``: values set by the command itself (not offered
    either).  ``flags``/``helps``: this command's own flag or help text for some settings, e.g.
    ``flags={"pseudo_dir": "--masks"}`` where one config serves two commands.  Positional
    arguments where an optional one precedes a required one (``[STORE] OUT``) are read as one
    list and given to the settings from the right.
    """

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        leafs = cli_fields(config_cls, exclude + tuple(fixed or ()), flags=flags, helps=helps)
        leaf_names = {fi.name for fi in leafs}
        extras = list(inspect.signature(fn).parameters.values())[1:]
        extra_hints = typing.get_type_hints(fn, include_extras=True)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=extra_hints.get(p.name, p.annotation))
                  for p in extras]
        grouped = _leading_optional(leafs)
        derived = [_param_for(fi) for fi in leafs if fi not in grouped]
        metavar = ""
        if grouped:
            group_param, metavar = _arguments_param(grouped)
            derived.insert(0, group_param)
        multiple = {fi.name for fi in leafs if fi.meta.get("multiple")}
        ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        all_params = [ctx_param] + [p for p in derived if p.default is inspect.Parameter.empty] + \
                     [p for p in derived if p.default is not inspect.Parameter.empty] + params
        if config_file:
            all_params.append(inspect.Parameter("config_path", inspect.Parameter.KEYWORD_ONLY, default=None,
                                                annotation=ConfigFileOpt))
        flag_names = flags_of(config_cls, flags=flags)

        def wrapper(ctx: typer.Context, **kwargs: Any) -> None:
            config_path = kwargs.pop("config_path", None)
            extra_values = {p.name: kwargs.pop(p.name) for p in extras}
            given = {k: v for k, v in kwargs.items() if k in leaf_names and not (k in multiple and not v)}
            for fi in leafs:  # tuple settings typed as comma-separated text
                if isinstance(given.get(fi.name), str) and typing.get_origin(cfg._unwrap_optional(fi.type)[0]) is tuple:
                    given[fi.name] = _text_list(fi, given[fi.name])
            from_file: dict[str, Any] = {}
            if config_path is not None:
                data = cfg.load_toml(config_path)
                data = data.get(name, data) if isinstance(data.get(name), dict) else data
                from_file = {k: v for k, v in data.items() if not str(k).startswith("_")}
                explicit = {k: v for k, v in given.items()
                            if ctx.get_parameter_source(k) not in (None, click_default())}
                flat = explicit
            else:
                flat = given
            if grouped:  # typed by the person: explicit
                flat.update(_spread_arguments(list(kwargs[_ARGUMENTS]), grouped, metavar))
            nested = cfg.merge(from_file, cfg.nest(config_cls, flat))
            nested = cfg.merge(nested, cfg.nest(config_cls, fixed or {}) if fixed else {})
            config = cfg.from_dict(config_cls, nested, where=str(config_path) if config_path else "config")
            fn(config, **extra_values)

        wrapper.__signature__ = inspect.Signature(all_params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in all_params}
        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = fn.__name__
        typer_app.command(name)(command(wrapper, flags=flag_names))
        return fn

    return decorate


def click_default() -> Any:
    """Click's ``ParameterSource.DEFAULT`` (typer vendors click under another name in new versions)."""
    try:
        from typer._click.core import ParameterSource  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older typer with a separate click
        from click.core import ParameterSource
    return ParameterSource.DEFAULT


# ------------------------------------------------------------------------------------------
# The app's own options
# ------------------------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        out.print(f"salcurate {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the library does.")] = False,
) -> None:
    """Score, select and curate noisy proxy annotations for semantic segmentation (SAL)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


class LazyBar:
    """A progress bar that appears once the library says how much work there is."""

    def __init__(self, stack: contextlib.ExitStack, description: str) -> None:
        self._stack, self._description = stack, description
        self._advance: Callable[[int], None] | None = None

    def start(self, total: int, done: int = 0) -> None:
        if total:
            self._advance = self._stack.enter_context(progress_bar(self._description, total))
            self._advance(done)

    def advance(self, n: int) -> None:
        if self._advance is not None:
            self._advance(n)
