"""Built-in dataset loaders: JSONL, JSON (a list of objects) and CSV. Each yields (line or row number, row)."""

import csv
import json

from ..errors import UsageError
from ..hookspecs import hookimpl


def load_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None


def load_json(path):
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise UsageError(f"{path}: a .json data file must hold a list of objects (use .jsonl for one object a line)")
    yield from enumerate(data, start=1)


def load_csv(path):
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            yield lineno, dict(row)


@hookimpl
def register_loaders(register):
    register("jsonl", load_jsonl, extensions=(".jsonl", ".jsonlines"))
    register("json", load_json, extensions=(".json",))
    register("csv", load_csv, extensions=(".csv",))
