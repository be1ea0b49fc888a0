"""Typed settings: every setting of every command is declared once, as a dataclass field.

A command's config is a frozen dataclass whose fields are made with :func:`setting`: the default,
a help text and (optionally) the command-line flag live in the field's metadata.  From that one
declaration

* the CLI derives its options (``salcurate.cli.options``), with ``--help`` text, defaults and
  choices;
* a TOML file can set any field (:func:`load_toml`, :func:`from_dict`), with command-line values
  overriding it (spaCy's pattern);
* :func:`to_dict` gives the resolved, JSON-safe values that are saved with every result, and
  :func:`to_toml` the file a training run writes beside its checkpoints.

Choices are :class:`Choice` enums, so ``--help`` lists them and a typo gets Typer's own message.
Nested dataclasses (a scorer's synthesis settings, an evaluation's inference settings) are TOML
tables and flat command-line options; a name may appear once across the whole tree.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from salcurate.errors import InputError

T = TypeVar("T")

#: Metadata keys understood by :func:`setting`.
_META = ("help", "flag", "short", "min", "max", "cli", "argument", "metavar", "run_only", "multiple")


class Choice(str, enum.Enum):
    """A setting with a fixed set of values; behaves as its string value everywhere."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(str(m.value) for m in cls)


def choice(cls: type[Choice], value: Any, name: str) -> Any:
    """``value`` as a member of Choice enum ``cls`` (a config made in Python may hold its string);
    a one-line error naming the setting ``name`` otherwise."""
    try:
        return cls(value.value if isinstance(value, enum.Enum) else value)
    except ValueError:
        raise InputError(f"{name} must be one of {', '.join(cls.values())}, got {value!r}", param=name) from None


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,  # noqa: A002
            short: str | None = None, min: float | None = None, max: float | None = None,  # noqa: A002
            cli: bool = True, argument: bool = False, metavar: str | None = None, run_only: bool = False,
            multiple: bool = False, default_factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its help text and command-line form.

    ``flag``: the option's declaration (default ``--field-name``; ``"--flip/--no-flip"`` for an
    on/off pair); ``short``: a one-letter alias such as ``-o``; ``min``/``max``: numeric bounds
    checked by the CLI; ``cli=False`` keeps a field out of the command line (TOML and Python
    only); ``argument=True`` makes it a positional argument; ``run_only=True`` marks settings that
    do not change a training run's weights (a resumed run may change them); ``multiple=True`` (a
    tuple setting) makes a repeatable option (``--split a --split b``) instead of comma-separated text.
    """
    meta = {"help": help, "flag": flag, "short": short, "min": min, "max": max, "cli": cli, "argument": argument,
            "metavar": metavar, "run_only": run_only, "multiple": multiple}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: The store every command reads when none is named: ``masks.h5`` in the current folder.
DEFAULT_STORE = "masks.h5"


def store_setting() -> Any:
    """The ``store`` setting that every command over a store declares (the CLI's first argument)."""
    return setting(DEFAULT_STORE, "The mask store (default: masks.h5 in the current folder).", argument=True,
                   metavar="STORE")


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One leaf setting of a (possibly nested) config: where it sits and how it is typed."""

    name: str
    path: tuple[str, ...]  # attribute path from the root config, e.g. ("synthesis", "scale")
    type: Any  # the resolved annotation
    default: Any
    meta: Mapping[str, Any]

    @property
    def flag(self) -> str:
        return self.meta.get("flag") or "--" + self.name.replace("_", "-")

    @property
    def primary_flag(self) -> str:
        """The flag as a person types it (``--flip`` of ``--flip/--no-flip``)."""
        return self.flag.split("/")[0]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def fields(cls: type, _prefix: tuple[str, ...] = ()) -> list[FieldInfo]:
    """The leaf settings of config class ``cls``, nested dataclasses flattened, in declaration order.

    Raises ``TypeError`` (a programming error, not bad input) when a name appears twice.
    """
    out: list[FieldInfo] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.extend(fields(t, _prefix + (f.name,)))  # type: ignore[arg-type]
        else:
            out.append(FieldInfo(f.name, _prefix + (f.name,), t, _default(f), dict(f.metadata)))
    if not _prefix:
        seen: set[str] = set()
        for fi in out:
            if fi.name in seen:
                raise TypeError(f"{cls.__name__}: setting {fi.name!r} is declared twice in the nested config")
            seen.add(fi.name)
    return out


def run_only_names(cls: type) -> tuple[str, ...]:
    """Settings marked ``run_only`` (they do not change what a training run learns)."""
    return tuple(fi.name for fi in fields(cls) if fi.meta.get("run_only"))


# ------------------------------------------------------------------------------------------
# Values: to and from plain data
# ------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-safe data (enums as strings, tuples as lists, nested as dicts)."""
    return _plain(config)


def _unwrap_optional(t: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(t)) == 2:
            return args[0], True
    return t, False


def describe_type(t: Any) -> str:
    """A person's word for a setting's type (for error messages)."""
    t, _ = _unwrap_optional(t)
    if isinstance(t, type) and issubclass(t, Choice):
        return "one of " + ", ".join(t.values())
    origin = typing.get_origin(t)
    if origin is tuple:
        args = typing.get_args(t)
        return f"a list of {describe_type(args[0])}s" if args else "a list"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(t, str(t))


def convert(value: Any, t: Any, where: str) -> Any:
    """``value`` (from TOML, JSON or a command line) as a value of annotation ``t``."""
    inner, optional = _unwrap_optional(t)
    if value is None:
        if optional:
            return None
        raise InputError(f"{where} must be {describe_type(inner)}, got nothing")
    bad = InputError(f"{where} must be {describe_type(inner)}, got {value!r}")
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        try:
            return inner(value.value if isinstance(value, enum.Enum) else value)
        except ValueError:
            raise bad from None
    origin = typing.get_origin(inner)
    if origin is tuple:
        args = typing.get_args(inner)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        item_t = args[0] if args else Any
        if len(args) >= 2 and args[1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"{where} must hold {len(args)} values, got {len(value)}: {value!r}")
            return tuple(convert(v, a, where) for v, a in zip(value, args))
        return tuple(convert(v, item_t, where) for v in value)
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if inner is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if inner is float:
        if isinstance(value, bool):
            raise bad
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise bad from None
        return out  # NaN passes: each command's range check says what it accepts
    if inner is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise bad
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config", base: T | None = None) -> T:
    """A ``cls`` from nested plain data; unknown keys and ill-typed values are one-line errors.

    Keys left out take their value from ``base`` (or the defaults).
    """
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        t = hints[name]
        current = getattr(base, name) if base is not None else _default(f)
        if name not in data:
            if current is dataclasses.MISSING:
                raise InputError(f"{where}: the setting {name} is required")
            kwargs[name] = current
            continue
        if dataclasses.is_dataclass(t):
            sub = data[name]
            if not isinstance(sub, Mapping):
                raise InputError(f"{where}.{name} must be a table of settings, got {sub!r}")
            kwargs[name] = from_dict(t, sub, where=f"{where}.{name}",  # type: ignore[arg-type]
                                     base=None if current is dataclasses.MISSING else current)
        else:
            try:
                kwargs[name] = convert(data[name], t, f"{where}.{name}" if where != "config" else name)
            except InputError as exc:  # name the setting, so that the CLI shows its flag
                raise InputError(str(exc), param=name) from None
    return cls(**kwargs)


def nest(cls: type, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``{leaf name: value}`` (as the command line gives them) as nested data for :func:`from_dict`."""
    by_name = {fi.name: fi.path for fi in fields(cls)}
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        path = by_name[name]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, table by table."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


# ------------------------------------------------------------------------------------------
# TOML files
# ------------------------------------------------------------------------------------------
def load_toml(path: str | Path) -> dict[str, Any]:
    """The settings in a TOML file; the table named like the command is used when present."""
    import tomllib

    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file; give an existing .toml file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a config file; give a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc}); fix the file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file; give a .toml file") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def _toml_lines(data: Mapping[str, Any], table: str) -> Iterator[str]:
    subtables = []
    for k, v in data.items():
        if v is None:
            yield f"# {k} = (unset)"
        elif isinstance(v, Mapping):
            subtables.append((k, v))
        else:
            yield f"{k} = {_toml_value(v)}"
    for k, v in subtables:
        name = f"{table}.{k}" if table else k
        yield ""
        yield f"[{name}]"
        yield from _toml_lines(v, name)


def to_toml(config: Any, *, header: str = "") -> str:
    """The resolved config as a TOML file that :func:`load_toml` + :func:`from_dict` read back.

    ``None`` values (unset optional settings) are written as comments: TOML has no null.
    """
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines.extend(_toml_lines(to_dict(config), ""))
    return "\n".join(lines).strip("\n") + "\n"
