"""Filters decide which teacher samples become training rows, each decision with a reason.

A filter factory takes options and returns ``f(candidate, context) -> str | None``: None keeps the candidate,
a string is the reason it was dropped (written to the rejects file under the filter's name). Filters run in
order per example; ``context.kept`` holds the candidates of this example kept so far (for de-duplication).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..generation.parsing import same_answer
from ..records import Sample, TeacherRecord


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


# words that carry no fact: a rationale may use them freely
_GLUE = set("""a an the is are was were be been being has have had do does did of to in on at by for with from as and or
but so then than that this these those it its it's he she they them their his her we you i which who whom whose what
when where why how there here not no yes all each every one some any more most less also just only very copy clause
answer question asks asked color colour because since therefore thus hence""".split())  # fmt: skip


def _question_entities(text: str) -> list[str]:
    """Names the question asks about: capitalised words of its last question, not its first word ("What color is
    Eva's kite?" -> ["Eva"])."""
    questions = re.findall(r"[^.?!\n]*\?", text)
    if not questions:
        return []
    words = re.findall(r"[A-Za-z][\w'’]*", questions[-1])
    return [re.sub(r"['’]s$", "", w) for w in words[1:] if w[0].isupper()]


def grounded(grounding: float = 0.5, **_):
    """A faithful rationale, checked against the input it explains (the bare input, not the demos):
    - every sentence it states has at least ``grounding`` of its content words (numbers included; the answer and
      glue words excepted) in the input: a sentence about other people, objects or numbers is not grounded;
    - it names what the question asks about (the capitalised names of the input's last question).
    Right answer, wrong reason ("Ivy has a blue pen." for a question about Eva's kite) is dropped. For tasks whose
    rationales derive new facts (arithmetic: "3 * 4 = 12"), keep ``grounding`` at 0.5 or below."""

    def check(c: Candidate, ctx: Context) -> str | None:
        source = _tokens(c.record.input)
        rationale = (c.sample.rationale or "").strip()
        if not rationale:
            return "no rationale to ground"
        answer = _tokens(c.sample.raw_answer or "") | _tokens(ctx.target or "")
        for name in _question_entities(c.record.input):
            if name.lower() not in _tokens(rationale):
                return f"the rationale does not mention {name}, whom the question asks about"
        for sentence in re.split(r"(?<=[.!?])\s+", rationale):
            words = [w for w in re.findall(r"\w+", sentence.lower()) if w not in _GLUE and w not in answer]
            if not words:
                continue
            found = sum(w in source for w in words) / len(words)
            if found < grounding:
                missing = [w for w in words if w not in source][:4]
                return f"{100 * found:.0f}% of the sentence {sentence[:60]!r} is in the input (needs {100 * grounding:.0f}%; not there: {', '.join(missing)})"
        return None

    return check


def judge(judge_model: str | None = None, judge_api_base: str | None = None, records=(), build_config=None, before=(), **_):
    """Ask a teacher (any LiteLLM model) whether each rationale supports its answer; "no" drops it. Only samples the
    filters before it keep are asked about (put it last: it is the one that costs). The questions go through the
    generation stage's loop: cached and journaled (a re-build pays nothing), retried, costed."""
    from .judging import ask_judge

    if not judge_model:
        from ..errors import UsageError

        raise UsageError("--filter judge needs --judge MODEL (a LiteLLM model string, e.g. openai/gpt-4o-mini)")
    verdicts, summary = ask_judge(judge_model, judge_api_base, records, build_config, before)

    def check(c: Candidate, ctx: Context) -> str | None:
        return verdicts.get((c.record.id, c.sample.teacher, c.sample.index), "the judge was not asked about this sample")

    check.summary = summary
    return check


BUILTIN = {"parsed": parsed, "agrees": agrees, "rationale-length": rationale_length, "dedup": dedup, "leak": leak,
           "grounded": grounded, "judge": judge}  # fmt: skip
DEFAULT = ("parsed", "agrees", "rationale-length", "dedup")
