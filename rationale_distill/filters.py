"""Filters decide which teacher samples become training rows, each decision with a reason.

A filter factory takes options and returns ``f(candidate, context) -> str | None``: None keeps the candidate,
a string is the reason it was dropped (written to the rejects file under the filter's name). Filters run in
order per example; ``context.kept`` holds the candidates of this example kept so far (for de-duplication).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .parsing import same_answer
from .records import Sample, TeacherRecord


@dataclass
class Candidate:
    record: TeacherRecord
    sample: Sample


@dataclass
class Context:
    target: str  # the answer this example is trained on (gold label or majority vote)
    kept: list[Candidate] = field(default_factory=list)


def parsed(**_):
    """The call succeeded, the answer parsed, and the response was not cut at max_tokens."""

    def check(c: Candidate, ctx: Context) -> str | None:
        if c.sample.error:
            return f"the call failed: {c.sample.error}"
        if c.sample.parse_error:
            return f"parse failure: {c.sample.parse_error}"
        if c.sample.finish_reason == "length":
            return "cut at max_tokens: the response is truncated (raise max_tokens)"
        return None

    return check


def agrees(**_):
    """The sample's answer equals the label source (gold label or majority vote)."""

    def check(c: Candidate, ctx: Context) -> str | None:
        if not same_answer(c.sample.answer, ctx.target, c.record.prompt.get("answer_type") or "text"):
            return f"answer {c.sample.answer!r} disagrees with {ctx.target!r}"
        return None

    return check


def rationale_length(min_chars: int = 1, max_chars: int = 4000, **_):
    """The rationale is between min_chars and max_chars characters long."""

    def check(c: Candidate, ctx: Context) -> str | None:
        n = len((c.sample.rationale or "").strip())
        if n < min_chars:
            return f"rationale has {n} chars, fewer than {min_chars}"
        if n > max_chars:
            return f"rationale has {n} chars, more than {max_chars}"
        return None

    return check


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def dedup(near: float = 0.9, **_):
    """Drop a rationale identical to (after normalising case and spacing) or, by token Jaccard similarity of at
    least ``near``, nearly identical to one already kept for the same example."""

    def check(c: Candidate, ctx: Context) -> str | None:
        mine = " ".join((c.sample.rationale or "").lower().split())
        my_tokens = _tokens(mine)
        for other in ctx.kept:
            theirs = " ".join((other.sample.rationale or "").lower().split())
            if mine == theirs:
                return f"exact duplicate of {other.sample.teacher} sample {other.sample.index}"
            their_tokens = _tokens(theirs)
            union = my_tokens | their_tokens
            if union and len(my_tokens & their_tokens) / len(union) >= near:
                return f"near duplicate (Jaccard >= {near}) of {other.sample.teacher} sample {other.sample.index}"
        return None

    return check


def leak(min_chars: int = 1, **_):
    """Drop a rationale that copies the gold answer the teacher was shown in its own prompt.

    Applies when the rendered prompt for this example, outside the shared few-shot demos, contains the gold
    label verbatim (a hint, a rationalisation prompt, a leaky template) and the rationale repeats it: the
    student will not be shown that, so the rationale teaches copying, not reasoning."""

    def check(c: Candidate, ctx: Context) -> str | None:
        label = c.record.label
        if not label or len(label) < min_chars:
            return None
        pattern = re.compile(rf"(?<!\w){re.escape(label)}(?!\w)", re.IGNORECASE)
        shown = " ".join(p.text for p in c.record.parts if p.part != "demos")
        if pattern.search(shown) and pattern.search(c.sample.rationale or ""):
            return f"the prompt shows the gold answer {label!r} and the rationale repeats it"
        return None

    return check


BUILTIN = {"parsed": parsed, "agrees": agrees, "rationale-length": rationale_length, "dedup": dedup, "leak": leak}
DEFAULT = ("parsed", "agrees", "rationale-length", "dedup")
