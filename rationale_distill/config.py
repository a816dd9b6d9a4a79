"""Config dataclasses drive the CLI flags, the YAML files and the docs: every field has ``metadata["help"]``."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory=None, flag: str | None = None,
           positional: bool = False, cli: bool = True):  # fmt: skip
    """A config field with help text; ``flag`` renames its CLI flag, ``cli=False`` keeps it out of the CLI."""
    meta = {"help": help, "flag": flag, "positional": positional, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp) -> tuple[type, bool]:
    """(the scalar type, is it a list) of an annotation such as ``int | None`` or ``list[str]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if args else (str, False)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return (args[0] if args and isinstance(args[0], type) else str), True
    return (tp if isinstance(tp, type) else str), False


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        tp, is_list = _base_type(hints[f.name])
        help_ = meta.get("help", "")
        if meta.get("positional"):
            parser.add_argument(f.name, type=tp, help=help_)
            continue
        flag = "--" + (meta.get("flag") or f.name).replace("_", "-")
        default = None  # unset flags fall back to the dataclass (or YAML) value
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif is_list:
            parser.add_argument(flag, dest=f.name, type=tp, action="append", default=default, help=help_ + " (repeatable)")
        else:
            parser.add_argument(flag, dest=f.name, type=tp, default=default, help=help_)


def from_args(cls, args: argparse.Namespace, base: dict | None = None):
    """Build ``cls`` from YAML values (``base``) overridden by the flags the user actually set."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return build(cls, values, "command line")


def build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"{where}: unknown setting {unknown[0]!r} for {cls.__name__} (known: {', '.join(sorted(names))})")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values]  # fmt: skip
    if missing:
        raise UsageError(f"{where}: missing required setting {missing[0]!r}")
    return cls(**values)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UsageError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of settings")
    return data


def to_dict(config) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
