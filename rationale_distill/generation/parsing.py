"""Answer/rationale extraction and answer normalisation, the way a person reads a model's reply.

A parser is ``parser(text, spec, fields=None) -> Parsed`` and raises ``ParseFailure(reason)``; the failure is
kept in the record with the raw text and counted, never turned into an empty target.

Two steps, kept apart:
1. *Where* the final answer is: after the prompt's answer marker ("So the answer is"), else in a common format
   (``\\boxed{20}``, ``#### 20``, ``Answer: 20``, "the answer is 20", a JSON object, ``**20**``, a last line on its
   own). ``find_answer`` returns the rationale (the text before it) and the span that holds the answer.
2. *What* the answer is, by its type (``extract``): the first number of the span for ``number`` (parsed as a real
   number: sign, decimals, thousands separators, fractions, percent, scientific notation, currency), the option
   for ``choice`` (against the task's option set), the first sentence for ``text``. A persona's sign-off after the
   answer ("So the answer is 20. Yo-ho!") is not part of it.

``normalize`` gives the canonical string that votes; ``same_answer`` compares two canonical answers by value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction

ANSWER_TYPES = ("text", "number", "choice")
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MAX_INFERRED_OPTIONS = 20  # more distinct gold labels than this is free text, not a closed set


class ParseFailure(Exception):
    """The teacher's text could not be parsed; ``str(exc)`` is the reason stored in the record."""


@dataclass
class Parsed:
    rationale: str
    raw_answer: str  # the span the answer was read from, as written
    answer: str | None = None  # its canonical form, when the parser already read it by the answer type


# --- numbers ----------------------------------------------------------------------------------------

_MINUS = "-\u2212\u2013"  # hyphen-minus, minus sign, en dash (as models write negatives)
_NUMBER = re.compile(
    rf"""(?<![\w.])
    (?P<sign>[{_MINUS}+])?\s?(?P<cur>[$€£¥₹])?\s?(?P<sign2>[{_MINUS}+])?
    (?:
        (?P<frac>\d+\s?/\s?\d+)(?![\d/])
      | (?P<grouped>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?)(?![\d,])
      | (?P<comma>\d+,\d{{1,2}})(?![\d,])
      | (?P<plain>\d+(?:\.\d+)?|\.\d+)
    )
    (?P<exp>[eE][-+]?\d+)?(?![\w])
    (?P<pct>\s?%)?""",
    re.VERBOSE,
)


def parse_number(text: str) -> float | None:
    """The value of the first number in ``text``, or None. '1,000' is a thousand, '1,5' one and a half, '3/4'
    0.75, '50%' 50, '1e3' 1000, '$-5' -5, '007' 7."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    if m["frac"]:
        num, den = (int(x) for x in re.split(r"\s?/\s?", m["frac"]))
        if den == 0:
            return None
        value = float(Fraction(num, den))
    elif m["grouped"]:
        value = float(m["grouped"].replace(",", ""))
    elif m["comma"]:
        value = float(m["comma"].replace(",", "."))  # a decimal comma: there is no 3-digit group after it
    else:
        value = float(m["plain"])
    if m["exp"]:
        value *= 10.0 ** int(m["exp"][1:])
    if (m["sign"] or m["sign2"] or "+")[0] in _MINUS:
        value = -value
    return value if math.isfinite(value) else None


def canonical_number(value: float) -> str:
    """12 significant digits, integers without a decimal point: what votes ('10.0' and '10' are one answer)."""
    rounded = float(f"{value:.12g}")
    if rounded == int(rounded) and abs(rounded) < 1e15:
        return str(int(rounded))
    return f"{rounded:.12g}"


def is_number(text) -> bool:
    """True when the whole of ``text`` is one number (a gold label such as '42', '1,000' or '-3.5')."""
    if isinstance(text, bool):
        return False
    if isinstance(text, (int, float)):
        return math.isfinite(text)
    m = _NUMBER.fullmatch(str(text).strip().rstrip("."))
    return m is not None


# --- choices ----------------------------------------------------------------------------------------

_PRONOUN = re.compile(r"\s+[a-z]")  # "I think", "A bit": a letter followed by a lower-case word is a word


def _letter_candidates(span: str):
    """Letters in the order a reader would take them as the chosen option, most explicit formats first."""
    patterns = (
        r"\(([A-Za-z])\)",  # (B)
        r"\*\*\s*\(?([A-Za-z])\)?[.):]?\s*\*\*",  # **B**, **(B)**
        r"(?i:\b(?:option|choice|letter|answer)\s*(?:is\s*)?:?\s*)\(?([A-Za-z])\b",  # Option B, answer: b
        r"^[^\w(]*([A-Za-z])(?:[.):]|$)",  # B) red, B. red, B
        r"^[^\w(]*([A-Za-z])(?=\s)",  # B red
        r"(?<![\w'’])([A-Z])(?![\w'’])",  # ... so B
    )
    for pattern in patterns:
        for m in re.finditer(pattern, span):
            letter = m.group(1)
            if letter in "IiAa" and _PRONOUN.match(span, m.end(1)):
                continue  # "I think B", "A good choice is C"
            yield letter.upper()


def parse_choice(span: str, options: list[str] | None) -> str:
    """The option chosen in ``span``: a letter (accepting '(B)', 'B)', 'B.', 'Option B', '**B**', 'I think B',
    case-insensitively) or one of the task's label strings (whole words; the earliest, then the longest)."""
    options = list(options or LETTERS)
    if all(len(o) == 1 and o.isalpha() for o in options):
        allowed = {o.upper() for o in options}
        for letter in _letter_candidates(span):
            if letter in allowed:
                return letter
    else:
        lowered = span.lower()
        best = None  # (position, -length, option)
        for option in options:
            m = re.search(rf"(?<!\w){re.escape(option.lower())}(?!\w)", lowered)
            if m and (best is None or (m.start(), -len(option)) < best[:2]):
                best = (m.start(), -len(option), option.lower())
        if best:
            return best[2]
    shown = ", ".join(options[:8]) + (", ..." if len(options) > 8 else "")
    raise ParseFailure(f"answer {_short(span)!r} is not one of the options ({shown})")


# --- answers ----------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s+[-—–]+\s+|\s+\(")  # "blue. Yo-ho", "blue - arr", "blue (I think)"


def clean_span(span: str) -> str:
    """Unwrap the formatting a model puts around an answer: \\boxed{}, \\text{}, **bold**, `code`, $math$."""
    text = span.strip()
    for macro in ("boxed", "text", "textbf", "mathrm"):
        text = re.sub(rf"\\{macro}\{{([^{{}}]*)\}}", r"\1", text)
    text = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", text).strip()
    m = re.fullmatch(r"\$([^$]+)\$\.?", text)
    if m:
        text = m.group(1)
    return text.replace("**", "").replace("__", "").strip().strip("`").strip()


def normalize(answer, answer_type: str = "text", options: list[str] | None = None) -> str:
    """The canonical form of an answer that is already isolated (a gold label, or a span cut by ``extract``)."""
    text = " ".join(str(answer).split()).strip()
    if answer_type == "number":
        value = parse_number(clean_span(text))
        if value is None:
            raise ParseFailure(f"answer {_short(text)!r} is not a number")
        return canonical_number(value)
    if answer_type == "choice":
        return parse_choice(clean_span(text), options)
    text = clean_span(text).strip(" \"'`*").rstrip(".!?;:,").strip(" \"'`*")
    if not text:
        raise ParseFailure("the answer is empty")
    return text.lower()


def extract(span: str, answer_type: str = "text", options: list[str] | None = None) -> tuple[str, str]:
    """(the answer as written, its canonical form) from the span after a marker: the answer ends where its type
    says it ends, so what follows it (a sign-off, a second sentence) is dropped."""
    span = span.strip().lstrip(":").strip()
    lines = [line for line in span.splitlines() if line.strip()]
    if not lines:
        raise ParseFailure("the answer is empty")
    first = lines[0].strip()
    if answer_type == "text":
        first = _SENTENCE_END.split(first, maxsplit=1)[0]
    elif answer_type == "choice":
        first = re.split(r"(?<=[.!?])\s+", first, maxsplit=1)[0]  # "(B)" may open the span: no cut at "("
    elif answer_type == "number":
        m = _NUMBER.search(clean_span(first))
        if m is None:
            raise ParseFailure(f"answer {_short(first)!r} is not a number")
        first = m.group(0)
    raw = first.strip().strip("*_`").rstrip(".!?,;:").strip("*_` ") or first.strip()
    return raw, normalize(first, answer_type, options)


def same_answer(a: str | None, b: str | None, answer_type: str = "text") -> bool:
    """Two canonical answers agree: by value with a small tolerance for numbers, exactly otherwise."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if answer_type == "number":
        x, y = parse_number(a), parse_number(b)
        return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
    return False


def infer_answer_type(labels: list) -> tuple[str, list[str] | None, str]:
    """(answer type, options, why) from the gold labels: all numeric -> number; a small closed set -> choice over
    it; otherwise text."""
    labels = [x for x in labels if x is not None and str(x).strip() != ""]
    if not labels:
        return "text", None, "no gold labels"
    if all(is_number(x) for x in labels):
        return "number", None, f"all {len(labels)} gold labels are numbers"
    distinct = sorted({" ".join(str(x).split()).lower() for x in labels})
    if len(distinct) <= MAX_INFERRED_OPTIONS and len(labels) >= 2 * len(distinct):
        options = [d.upper() for d in distinct] if all(len(d) == 1 and d.isalpha() for d in distinct) else distinct
        return "choice", options, f"{len(labels)} gold labels take {len(distinct)} values"
    return "text", None, f"{len(labels)} gold labels take {len(distinct)} values (not a closed set)"


# --- where the answer is ----------------------------------------------------------------------------

_FORMATS = (
    # (name, pattern whose group 1 is the answer span); each is tried in turn, the last match of each wins
    ("boxed", re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")),
    ("####", re.compile(r"^\s*#{4}\s*(.+)$", re.M)),
    ("answer:", re.compile(r"(?i)\**(?:final\s+)?answer\**\s*[:：]\s*\**\s*(.+)")),
    ("the answer is", re.compile(r"(?i)\b(?:the\s+)?(?:final\s+|correct\s+)?answer\s+(?:is|would be|will be)\s*:?\s*(.+)")),
)


def find_answer(text: str, marker: str | None, answer_type: str = "text", options: list[str] | None = None, first: bool = True):
    """Return (rationale, answer as written, canonical answer). Reasoning-model output keeps its <think> block in
    the rationale and looks for the answer after it. The *first* complete answer counts (a base model with no stop
    sequence goes on to invent and answer the next question); a marker whose answer is a question ("So the answer
    is 3? No. ...") is not complete. first=False: the last marker wins (a prompt's ``answer_position: last``)."""
    head, body = "", text
    if "</think>" in text:
        head, body = text.rsplit("</think>", 1)
        head = head.replace("<think>", "").strip()
    if marker:
        lowered, m = body.lower(), marker.lower()
        starts = [x.start() for x in re.finditer(re.escape(m), lowered)]
        for idx in starts if first else starts[-1:]:
            last = idx == starts[-1]
            span = body[idx + len(marker) :]
            if not span.strip().strip(":").strip():
                if last:
                    raise ParseFailure(f"nothing after the answer marker {marker!r}")
                continue
            if not last and _QUESTIONED.match(span):
                continue
            try:
                raw, answer = extract(span, answer_type, options)
            except ParseFailure:
                if last:
                    raise
                continue
            return _join(head, body[:idx]), raw, answer
    for _, pattern in _FORMATS:
        # the prompt's own marker takes the first complete answer; these conventions keep theirs (the final \boxed{})
        for m in reversed(list(pattern.finditer(body))):
            try:
                raw, answer = extract(m.group(1), answer_type, options)
            except ParseFailure:
                continue
            return _join(head, _rationale_before(body, m.start())), raw, answer
    found = (_json_answer(body, answer_type, options) or _bold_answer(body, answer_type, options)
             or _last_line(body, answer_type, options) or _short_reply(body, answer_type, options))
    if found:
        return _join(head, found[0]), found[1], found[2]
    where = f"no answer marker {marker!r}" if marker else "no answer"
    raise ParseFailure(f"{where} in the response (nor \\boxed{{}}, ####, 'Answer:', JSON, **bold** or a last line with the answer)")


_QUESTIONED = re.compile(r"\s*:?\s*[^.!?\n]*\?")  # the answer after a marker is a question: not a complete answer


def _join(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _rationale_before(body: str, start: int) -> str:
    return re.sub(r"(?i)[\s*#]*(?:final\s+)?(?:the\s+)?$", "", body[:start]).strip()


def _json_answer(body, answer_type, options):
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        obj = json.loads(body[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("answer") in (None, ""):
        return None
    try:
        raw, answer = str(obj["answer"]).strip(), normalize(obj["answer"], answer_type, options)
    except ParseFailure:
        return None
    rationale = obj.get("rationale", obj.get("reasoning", body[:start]))
    return str(rationale).strip(), raw, answer


def _bold_answer(body, answer_type, options):
    for m in reversed(list(re.finditer(r"\*\*([^*\n]{1,60})\*\*", body))):
        span = m.group(1).strip()
        if len(span.split()) > 6:
            continue
        try:
            if answer_type == "number" and not is_number(span.strip("$ .")):
                continue
            raw, answer = extract(span, answer_type, options)
        except ParseFailure:
            continue
        return body[: m.start()].strip(), raw, answer
    return None


def _last_line(body, answer_type, options):
    lines = [line for line in body.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    last = clean_span(lines[-1]).strip().rstrip(".")
    if len(last.split()) > 6 or (answer_type == "number" and not is_number(last.lstrip("$"))):
        return None
    try:
        answer = normalize(last, answer_type, options)
        if answer_type == "choice" and len(last.split()) > 2:
            return None
    except ParseFailure:
        return None
    return "\n".join(lines[:-1]).strip(), last, answer


def _short_reply(body, answer_type, options):
    """A reply of a few words to a number or choice question is its answer ("I think B", "42.")."""
    if answer_type == "text" or len(body.split()) > 8 or "\n" in body.strip():
        return None
    try:
        raw, answer = extract(body, answer_type, options)
    except ParseFailure:
        return None
    return "", raw, answer


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# --- the built-in parsers ---------------------------------------------------------------------------


def _options(spec):
    return getattr(spec, "options", None) or None


def answer_marker(text: str, spec, fields: dict | None = None) -> Parsed:
    """Rationale, then '<marker> X' (Distilling Step-by-Step's 'So the answer is X'); the first complete answer counts
    unless the prompt says ``answer_position: last``. Without a marker, the common answer formats are recognised."""
    first = getattr(spec, "answer_position", "first") != "last"
    rationale, raw, answer = find_answer(text, spec.answer_marker, spec.answer_type or "text", _options(spec), first=first)
    return Parsed(rationale=rationale, raw_answer=raw, answer=answer)


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
    """Return (rationale, raw answer, canonical answer); raises ParseFailure."""
    parsed = parser(text, spec, fields)
    if parsed.answer is not None:
        return parsed.rationale, parsed.raw_answer, parsed.answer
    raw, answer = extract(parsed.raw_answer, spec.answer_type or "text", _options(spec))
    return parsed.rationale, raw, answer
