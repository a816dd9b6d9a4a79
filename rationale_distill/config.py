"""Config dataclasses drive the CLI flags, the YAML files and the docs: every field has ``metadata["help"]``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError


def default_cache_dir() -> Path:
    """Where paid answers (the per-request cache), batch journals and converted models live: $RDISTILL_CACHE_DIR or
    ~/.cache/rationale-distill."""
    return Path(os.environ.get("RDISTILL_CACHE_DIR") or Path.home() / ".cache" / "rationale-distill")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory=None, flag: str | None = None,
           positional: bool = False, cli: bool = True, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, choices: tuple | None = None,
           pattern: tuple[str, str] | None = None):  # fmt: skip
    """A config field with help text; ``flag`` renames its CLI flag, ``cli=False`` keeps it out of the CLI.

    ``ge``/``gt``/``le``/``lt`` bound a number, ``choices`` lists the allowed values (of each item, for a list) and
    ``pattern`` is (a regular expression a string must match whole, what it means in words); ``build`` checks them all, with the type."""
    meta = {"help": help, "flag": flag, "positional": positional, "cli": cli, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": choices, "pattern": pattern}  # fmt: skip
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


def from_args(cls, args: argparse.Namespace, base: dict | None = None, base_where: str = "command line"):
    """Build ``cls`` from YAML values (``base``, read from ``base_where``) overridden by the flags the user set."""
    values = dict(base or {})
    origins = {name: base_where for name in values}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
            origins[f.name] = "command line"
    return build(cls, values, base_where, origins)


def build(cls, values: dict, where: str, origins: dict | None = None):
    """``cls(**values)`` after checking every value by its type and range; a bad one is a one-line UsageError that
    names where it came from (``origins[name]``, else ``where``), the setting, its flag, and what is allowed."""
    if not isinstance(values, dict):
        raise UsageError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    aliases = {f.metadata["flag"]: f.name for f in dataclasses.fields(cls) if f.metadata.get("flag")}
    values = {aliases.get(k, k) if aliases.get(k) not in values else k: v for k, v in values.items()}  # `teacher:` as the flag
    unknown = sorted(set(values) - names, key=str)
    if unknown:
        raise UsageError(f"{where}: unknown setting {unknown[0]!r} for {cls.__name__} (known: {', '.join(sorted(names))})")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values]  # fmt: skip
    if missing:
        raise UsageError(f"{where}: missing required setting {missing[0]!r}")
    hints = typing.get_type_hints(cls)
    checked = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            checked[f.name] = check_value(f, hints[f.name], values[f.name], (origins or {}).get(f.name, where))
    return cls(**checked)


def check_value(f: dataclasses.Field, hint, value, where: str):
    """The value converted to the field's type (YAML's "1e-3" -> 0.001, "no" -> False), then checked against the
    field's range and choices. Raises a one-line UsageError."""
    meta = f.metadata
    name = f.name if meta.get("positional") or not meta.get("cli", True) else f"{f.name} (--{(meta.get('flag') or f.name).replace('_', '-')})"

    def bad(problem: str):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return UsageError(f"{where}: {name} = {shown}: {problem}")

    tp, is_list = _base_type(hint)
    if is_list and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]  # `teacher: openai/gpt-4o-mini` means a list of one
    if tp in (int, float) and not is_list and isinstance(value, bool):
        raise bad(f"expected a number, not {str(value).lower()}")
    try:
        value = _adapter(hint).validate_python(value)
    except Exception as exc:  # pydantic.ValidationError
        errors = getattr(exc, "errors", None)
        detail = errors()[0]["msg"] if errors else str(exc)
        raise bad(_plain(detail, tp, is_list, hint)) from None
    if value is None:
        return value
    for item in value if is_list else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            raise bad("expected a finite number")
        for key, test, words in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                 ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):  # fmt: skip
            bound = meta.get(key)
            if bound is not None and not test(item, bound):
                raise bad(f"must be {words} {bound}")
        if meta.get("choices") and item not in meta["choices"]:
            raise bad(f"choose one of {', '.join(map(str, meta['choices']))}")
        if meta.get("pattern") and not re.fullmatch(meta["pattern"][0], item):
            raise bad(f"expected {meta['pattern'][1]}")
    return value


@functools.cache
def _adapter(hint):
    from pydantic import TypeAdapter

    return TypeAdapter(hint)


def _plain(detail: str, tp, is_list: bool, hint) -> str:
    """pydantic's message, with the type in the words a YAML author uses."""
    kind = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(tp, tp.__name__)
    expected = f"a list of {kind}" if is_list else kind
    optional = type(None) in typing.get_args(hint)
    return f"expected {expected}{' (or null)' if optional else ''} ({detail[0].lower() + detail[1:]})"


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
