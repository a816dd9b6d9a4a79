"""Answer/rationale extraction and answer normalisation.

A parser is ``parser(text, spec, fields=None) -> Parsed`` and raises ``ParseFailure(reason)``; the failure is
kept in the record with the raw text and counted, never turned into an empty target.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


class ParseFailure(Exception):
    """The teacher's text could not be parsed; ``str(exc)`` is the reason stored in the record."""


@dataclass
class Parsed:
    rationale: str
    raw_answer: str


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CHOICE = re.compile(r"^\W*\(?([A-Za-z])\)?(?:\W|$)")


def normalize(answer: str, answer_type: str = "text") -> str:
    """Canonical form of an answer, so that '1,000.', '$1000' and '1000' vote together."""
    text = " ".join(str(answer).split()).strip()
    if answer_type == "number":
        numbers = _NUMBER.findall(text)
        if not numbers:
            raise ParseFailure(f"answer {text!r} is not a number")
        value = numbers[-1].replace(",", "")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        return "0" if value in ("-0", "") else value
    if answer_type == "choice":
        match = _CHOICE.match(text)
        if not match:
            raise ParseFailure(f"answer {text!r} is not a choice letter")
        return match.group(1).upper()
    text = text.strip(" \"'`*").rstrip(".!?;:,").strip(" \"'`*")
    if not text:
        raise ParseFailure("the answer is empty")
    return text.lower()


def answer_marker(text: str, spec, fields: dict | None = None) -> Parsed:
    """Rationale, then '<marker> X' (Distilling Step-by-Step's 'So the answer is X'). The last marker wins."""
    marker = spec.answer_marker
    idx = text.lower().rfind(marker.lower())
    if idx < 0:
        raise ParseFailure(f"no answer marker {marker!r} in the response")
    answer = text[idx + len(marker) :].strip().lstrip(":").strip()
    answer = answer.splitlines()[0].strip() if answer else ""
    answer = answer.strip().rstrip(".").strip("* ").strip()
    if not answer:
        raise ParseFailure(f"nothing after the answer marker {marker!r}")
    return Parsed(rationale=text[:idx].strip(), raw_answer=answer)


def first_word(text: str, spec, fields: dict | None = None) -> Parsed:
    """The answer after the marker if there is one, else the first word: for bare prompts that get no format."""
    try:
        return answer_marker(text, spec, fields)
    except ParseFailure:
        words = text.split()
        if not words:
            raise ParseFailure("the response is empty") from None
        return Parsed(rationale="", raw_answer=words[0].strip(".,;:!?\"'"))


def json_object(text: str, spec, fields: dict | None = None) -> Parsed:
    """A JSON object with ``rationale`` (or ``reasoning``) and ``answer``, possibly inside a code fence."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ParseFailure("no JSON object in the response")
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ParseFailure(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
    if not isinstance(obj, dict) or "answer" not in obj:
        raise ParseFailure("the JSON object has no 'answer' field")
    rationale = obj.get("rationale", obj.get("reasoning", ""))
    return Parsed(rationale=str(rationale).strip(), raw_answer=str(obj["answer"]).strip())


def dspy_fields(text: str, spec, fields: dict | None = None) -> Parsed:
    """Structured output from a DSPy program: ``reasoning`` and ``answer`` fields."""
    if not fields or fields.get("answer") in (None, ""):
        raise ParseFailure("the DSPy program returned no 'answer' field")
    return Parsed(rationale=str(fields.get("reasoning", "")).strip(), raw_answer=str(fields["answer"]).strip())


def parse_sample(parser, text: str, spec, fields: dict | None = None) -> tuple[str, str, str]:
    """Return (rationale, raw_answer, normalised answer); raises ParseFailure."""
    parsed = parser(text, spec, fields)
    return parsed.rationale, parsed.raw_answer, normalize(parsed.raw_answer, spec.answer_type)
