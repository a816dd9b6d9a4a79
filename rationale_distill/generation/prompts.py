"""Prompt strategies are data: a YAML file -> a validated ``PromptSpec`` -> rendered, part-marked messages.

A file has ``name``, ``template`` (a data row -> the user message, with ``{field}`` placeholders) and
optionally ``system``, ``instructions``, ``examples`` (few-shot demos: ``input``, ``rationale``,
``answer``), ``response_template`` (how a demo's rationale and answer are written), ``format`` (``chat``,
or ``text`` for base models with no chat template), ``parser``, ``answer_marker``, ``answer_type``,
``stop`` and default sampling ``params``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import BadRow, UsageError
from ..records import Part
from .parsing import ANSWER_TYPES

PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})")  # {field}, not {{literal}}
FIELDS = {
    "name", "description", "format", "system", "instructions", "examples", "template", "response_template",
    "parser", "answer_marker", "answer_type", "options", "stop", "params", "demo_separator", "answer_position",
}  # fmt: skip


@functools.lru_cache(maxsize=64)
def template_fields(template: str) -> tuple[str, ...]:
    """The {fields} a template fills from the row (parsed once per template, not once per row)."""
    return tuple(f for _, f, _, _ in string.Formatter().parse(template) if f)


@dataclass
class PromptSpec:
    name: str
    template: str
    system: str | None = None
    instructions: str | None = None
    examples: list[dict] = field(default_factory=list)
    response_template: str = "{rationale} So the answer is {answer}."
    format: str = "chat"  # "chat": system/user/assistant messages; "text": one plain prompt for base models
    parser: str = "answer-marker"
    answer_marker: str = "So the answer is"
    answer_position: str = "first"  # which answer counts when a reply holds several: "first" or "last"
    answer_type: str | None = None  # None: inferred from the gold labels at generation time (else text)
    options: list[str] | None = None  # the option set of a choice task (letters or label strings)
    stop: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    description: str = ""
    demo_separator: str = "\n\n"
    source: str = "<dict>"  # where it came from, for error messages
    sha256: str = ""

    @functools.cached_property
    def _fixed_placeholders(self) -> list[tuple[str, set]]:
        """{names} written in system and instructions, which are sent as written: found once, checked per row."""
        return [(kind, set(PLACEHOLDER.findall(text or ""))) for kind, text in (("system", self.system), ("instructions", self.instructions))]

    @property
    def input_fields(self) -> list[str]:
        return list(template_fields(self.template))

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "source": self.source, "answer_type": self.answer_type,
                "options": self.options, "parser": self.parser}  # fmt: skip

    # --- rendering ----------------------------------------------------------------------------------

    def render_input(self, row: dict, where: str = "row") -> str:
        missing = [f for f in self.input_fields if f not in row]
        if missing:
            present = ", ".join(sorted(row)) or "none"
            raise BadRow(
                f"{where}: missing field {missing[0]!r} needed by prompt {self.name!r} "
                f"(fields present: {present}); fix the data or pass --input-field"
            )
        for name in self.input_fields:
            what = unusable(row[name])
            if what:
                raise BadRow(f"{where}: field {name!r} is {what}, but prompt {self.name!r} needs text or a number there")
        for kind, names in self._fixed_placeholders:
            named = sorted(names & set(row))
            if named:
                raise UsageError(
                    f"{self.source}: {kind} contains {{{named[0]}}}, a field of the rows, but only `template` is filled "
                    f"in from each row ({kind} is sent as written): move the row-dependent text into template"
                )
        return self.template.format_map({k: _text(v) for k, v in row.items()})

    def render_response(self, rationale: str, answer: str) -> str:
        return self.response_template.format(rationale=rationale.strip(), answer=answer)

    def render(self, row: dict, where: str = "row") -> tuple[list[dict], list[Part]]:
        """Return (messages exactly as sent, the same text marked by part)."""
        parts: list[Part] = []
        if self.format == "text":
            for kind, text in self._context_blocks():
                parts.append(Part(kind, "user", text, 0))
            parts.append(Part("input", "user", self.render_input(row, where), 0))
            content = self.demo_separator.join(p.text for p in parts)
            return [{"role": "user", "content": content}], parts

        msg = 0
        head = [(k, t) for k, t in (("system", self.system), ("instructions", self.instructions)) if t]
        if head:
            parts.extend(Part(kind, "system", text.strip(), msg) for kind, text in head)
            msg += 1
        for demo in self.examples:
            parts.append(Part("demos", "user", self._demo_input(demo), msg))
            parts.append(Part("demos", "assistant", self.render_response(demo["rationale"], str(demo["answer"])), msg + 1))
            msg += 2
        parts.append(Part("input", "user", self.render_input(row, where), msg))
        return _messages(parts), parts

    def _demo_input(self, demo: dict) -> str:
        value = demo["input"]
        return self.render_input(value, f"{self.source}: examples") if isinstance(value, dict) else str(value)

    def _context_blocks(self):
        for kind, text in (("system", self.system), ("instructions", self.instructions)):
            if text:
                yield kind, text.strip()
        for demo in self.examples:
            yield "demos", f"{self._demo_input(demo)} {self.render_response(demo['rationale'], str(demo['answer']))}"


def _messages(parts: list[Part]) -> list[dict]:
    messages: list[dict] = []
    for p in parts:
        if p.message == len(messages):
            messages.append({"role": p.role, "content": p.text})
        else:
            messages[p.message]["content"] += "\n\n" + p.text
    return messages


def unusable(value: Any) -> str | None:
    """What is wrong with a row value as prompt text ("null", "a list", "a dict"), or None when it can be used."""
    if value is None:
        return "null"
    return f"a {type(value).__name__}" if isinstance(value, (list, dict)) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def strip_context(parts: list[Part]) -> str:
    """The bare input with every engineered part (system, instructions, demos) removed."""
    return "\n\n".join(p.text for p in parts if p.part == "input")


# --- loading ----------------------------------------------------------------------------------------


def load_prompt(source: str | Path | dict, name_hint: str | None = None) -> PromptSpec:
    """Load and validate a prompt from a YAML path or an already-parsed dict."""
    if isinstance(source, dict):
        data, where = dict(source), f"prompt {source.get('name', name_hint)!r}"
        digest = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()
    else:
        path = Path(source)
        where = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"--prompt {path}: no such file") from None
        digest = hashlib.sha256(raw).hexdigest()
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UsageError(f"{path}{line}: invalid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: a prompt file must be a YAML mapping with at least 'name' and 'template'")
    return _validate(data, where, digest)


def _validate(data: dict, where: str, digest: str) -> PromptSpec:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(FIELDS))})")
    for required in ("name", "template"):
        if not isinstance(data.get(required), str) or not data[required].strip():
            raise UsageError(f"{where}: missing required field {required!r} (a non-empty string)")
    if data.get("answer_position", "first") not in ("first", "last"):
        raise UsageError(f"{where}: answer_position must be 'first' or 'last', not {data['answer_position']!r}")
    if data.get("format", "chat") not in ("chat", "text"):
        raise UsageError(f"{where}: format must be 'chat' or 'text', not {data['format']!r}")
    if data.get("answer_type") is not None and data["answer_type"] not in ANSWER_TYPES:
        raise UsageError(f"{where}: answer_type must be one of {', '.join(ANSWER_TYPES)}, not {data['answer_type']!r}")
    options = data.get("options")
    if options is not None and (not isinstance(options, list) or not options or not all(isinstance(o, (str, int)) for o in options)):
        raise UsageError(f"{where}: options must be a non-empty list of option letters or label strings")
    if options is not None:
        data = {**data, "options": [str(o) for o in options]}
        data.setdefault("answer_type", "choice")
    examples = data.get("examples") or []
    if not isinstance(examples, list):
        raise UsageError(f"{where}: examples must be a list of {{input, rationale, answer}}")
    for i, demo in enumerate(examples):
        for key in ("input", "rationale", "answer"):
            if not isinstance(demo, dict) or key not in demo:
                raise UsageError(f"{where}: examples[{i}] is missing {key!r} (each demo needs input, rationale, answer)")
    stop = data.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    spec = PromptSpec(
        **{k: v for k, v in data.items() if k not in ("examples", "stop")},
        examples=examples, stop=list(stop), source=where, sha256=digest,
    )  # fmt: skip
    try:
        spec.render_response("r", "a")
    except (KeyError, IndexError) as exc:
        raise UsageError(f"{where}: response_template may use only {{rationale}} and {{answer}}, not {exc}") from None
    for demo in examples:  # render each demo once so a bad placeholder fails here, not mid-run
        spec._demo_input(demo)
    return spec


def resolve_prompt(plugins, value: str) -> PromptSpec:
    """``--prompt`` takes a registered name or a path to a YAML file."""
    if value in plugins.prompts:
        return load_prompt(plugins.prompts.get(value), name_hint=value)
    if value.endswith((".yaml", ".yml")) or Path(value).exists():
        return load_prompt(value)
    known = ", ".join(plugins.prompts.names()) or "none"
    raise UsageError(f"--prompt {value!r}: no such prompt (known: {known}) and no such file")
