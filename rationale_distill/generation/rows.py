"""The inputs of a generation run: rows read by the registered loaders, checked and rendered into prompts.

A bad row stops the run with its file and line (or, with --skip-bad-rows, is skipped and listed); nothing has been
sent when any of this runs, and nothing here imports LiteLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadRow, UsageError
from .parsing import ANSWER_TYPES, ParseFailure, infer_answer_type, normalize
from .prompts import PromptSpec, unusable

if TYPE_CHECKING:
    from .generate import GenerateConfig



def load_rows(plugins, path: str, limit: int | None = None) -> list[tuple[str, dict]]:
    """Rows with where they came from ('file:line'), by the loader registered for the file's extension."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    loader = None
    for entry in plugins.loaders:
        if any(p.name.endswith(ext) for ext in entry.options.get("extensions", ())):
            loader = entry.obj
            break
    if loader is None:
        exts = sorted(e for entry in plugins.loaders for e in entry.options.get("extensions", ()))
        raise UsageError(f"{path}: no loader for this file type (known: {', '.join(exts)})")
    rows = []
    for lineno, row in loader(p):
        rows.append((f"{path}:{lineno}", row))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise UsageError(f"{path}: no rows")
    return rows


def settle_answer_type(spec: PromptSpec, config: GenerateConfig, rows) -> tuple[PromptSpec, str]:
    """The answer type (and option set) this run reads answers with: --answer-type, else the prompt file's, else
    inferred from the gold labels. Returns the spec to use and where the type came from."""
    from dataclasses import replace

    if config.answer_type is not None:
        if config.answer_type not in ANSWER_TYPES:
            raise UsageError(f"--answer-type {config.answer_type!r}: choose one of {', '.join(ANSWER_TYPES)}")
        if config.options and config.answer_type != "choice":
            raise UsageError("--option is for --answer-type choice")
        return replace(spec, answer_type=config.answer_type, options=config.options or spec.options), "--answer-type"
    if config.options:
        return replace(spec, answer_type="choice", options=config.options), "--option"
    if spec.answer_type is not None:
        return spec, f"prompt {spec.name}"
    labels = [row.get(config.label_field) for _, row in rows if isinstance(row, dict)] if config.label_field else []
    kind, options, why = infer_answer_type(labels)
    return replace(spec, answer_type=kind, options=spec.options or options), f"inferred: {why}"


def describe_answer_type(spec: PromptSpec, source: str) -> str:
    options = f" over {', '.join(spec.options[:6])}{', ...' if len(spec.options) > 6 else ''}" if spec.options else ""
    return f"{spec.answer_type}{options} ({source})"


def prepare_rows(spec: PromptSpec, config: "GenerateConfig", rows, limit: int | None) -> tuple[list, list[tuple[str, str]]]:
    """(examples, skipped rows as (where, why)). A bad row, or one whose prompt is over ``limit`` tokens (when
    given), stops the run with its file and line, or with --skip-bad-rows is skipped and listed. Nothing has been
    sent yet."""
    examples, skipped = [], []
    for where, row in rows:
        try:
            ex = prepare_row(spec, config, where, row)
            check_size(ex, limit)
        except BadRow as exc:
            skip(exc, where, config, skipped)
            continue
        examples.append(ex)
    return none_left(examples, skipped, config), skipped


def within_window(examples: list, skipped: list[tuple[str, str]], config: "GenerateConfig", window: int) -> list:
    """The examples whose prompts fit the model's context window (known once the teachers are asked); the others
    stop the run, or with --skip-bad-rows join ``skipped``."""
    kept = []
    for ex in examples:
        try:
            check_size(ex, window)
        except BadRow as exc:
            skip(exc, ex.where, config, skipped)
            continue
        kept.append(ex)
    return none_left(kept, skipped, config)


def none_left(examples: list, skipped: list[tuple[str, str]], config: "GenerateConfig") -> list:
    """The examples, unless every row was skipped: then a one-line error naming the first."""
    if not examples:
        raise UsageError(f"{config.data}: every row was skipped as bad (first: {skipped[0][0]}: {skipped[0][1]})")
    return examples


def check_size(ex: "Example", limit: int | None) -> None:
    if limit is None:
        return
    size = prompt_size(ex.messages)  # a cheap upper estimate: no tokenizer for a 50 MB row
    if size > limit:
        raise BadRow(f"{ex.where}: the prompt is about {size:,} tokens, over the {limit:,} the model accepts "
                     "(--max-prompt-tokens); shorten the row")  # fmt: skip


def skip(exc: BadRow, where: str, config: "GenerateConfig", skipped: list[tuple[str, str]]) -> None:
    if not config.skip_bad_rows:
        raise BadRow(f"{exc}; or pass --skip-bad-rows to skip such rows (counted and listed)") from None
    skipped.append((where, str(exc).split(": ", 1)[-1]))


DEFAULT_WINDOW = 131072


def prompt_size(messages: list[dict]) -> int:
    """Estimated prompt tokens: 3 characters per token (English runs ~4, so this errs towards refusing less text)."""
    return prompt_chars(messages) // 3 + 4 * len(messages)


def prompt_chars(messages: list[dict]) -> int:
    return sum(len(m.get("content") or "") for m in messages)


def row_notes(examples: list, skipped: list[tuple[str, str]], config: GenerateConfig) -> list[str]:
    notes = []
    if skipped:
        listed = f"; all listed in {skipped_path(Path(config.out))}" if config.out else ""
        first = "; ".join(f"{w}: {why}" for w, why in skipped[:3])
        notes.append(f"{len(skipped)} bad rows skipped (--skip-bad-rows): {first}{listed}")
    seen: dict[str, str] = {}
    duplicates = []
    for ex in examples:
        if ex.id in seen:
            duplicates.append((ex.id, seen[ex.id], ex.where))
        seen.setdefault(ex.id, ex.where)
    if duplicates:
        i, a, b = duplicates[0]
        notes.append(f"{len(duplicates)} duplicate ids (first: {i!r} at {a} and {b}): records are told apart by id "
                     "downstream; make --id-field unique")  # fmt: skip
    return notes


def skipped_path(out: Path) -> Path:
    return out.with_name(out.stem + ".skipped.jsonl")


@dataclass
class Example:
    id: str
    where: str
    row: dict
    fields: dict  # the row as the template sees it ({input} filled from --input-field)
    messages: list
    parts: list
    label: str | None


def prepare_row(spec: PromptSpec, config: GenerateConfig, where: str, row: dict) -> Example:
    if not isinstance(row, dict):
        raise BadRow(f"{where}: expected an object with named fields, got {type(row).__name__}")
    fields = dict(row)
    if config.input_field:
        if config.input_field not in row:
            raise BadRow(f"{where}: --input-field {config.input_field!r} is not in the row (fields: {', '.join(sorted(row))})")
        fields["input"] = row[config.input_field]
        what = unusable(fields["input"])
        if what:
            raise BadRow(f"{where}: field {config.input_field!r} is {what}, but the prompt needs text or a number there")
    messages, parts = spec.render(fields, where)
    label = None
    if config.label_field:
        if config.label_field not in row:
            raise BadRow(f"{where}: --label-field {config.label_field!r} is not in the row (fields: {', '.join(sorted(row))})")
        try:
            label = normalize(row[config.label_field], spec.answer_type, spec.options)
        except ParseFailure as exc:
            raise BadRow(f"{where}: gold label: {exc} (prompt answer_type is {spec.answer_type!r})") from None
    if config.id_field:
        if config.id_field not in row or row[config.id_field] is None:
            raise BadRow(f"{where}: --id-field {config.id_field!r} is not in the row")
        ex_id = str(row[config.id_field])
    else:
        ex_id = f"row-{where.rsplit(':', 1)[1]}"
    return Example(ex_id, where, row, fields, messages, parts, label)
