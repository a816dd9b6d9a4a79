"""Example teacher plugin: a programmatic teacher that solves the step tasks (`examples/make_step_tasks.py`) and
the demo's look-up task, and writes correct step-by-step rationales, so that what a student learns from rationales
can be measured without teacher noise. Load it with `rdistill --plugins-dir plugins ...`; use it as `--teacher
step-teacher`.

It reads the last question in the rendered prompt (any prompt whose template ends with the question, few-shot or
bare), solves it by rule, and answers in the demos' format: "<rationale> So the answer is <answer>." A question it
cannot read gets an answer without a marker, which the dataset builder counts as a parse failure, as it would a
real teacher's.
"""

import re

import rationale_distill as rd

TWOHOP = re.compile(r"(?P<has>(?:\w+ has an? \w+(?:, )?)+)\. (?P<where>.+?)\. Where is the thing (?P<who>\w+) has\?")
LOOKUP = re.compile(r"(?P<has>(?:\w+ has an? \w+ \w+(?:, )?)+)\. What colou?r is (?P<who>\w+)'s (?P<thing>\w+)\?")
ARITH = re.compile(r"(?P<name>\w+) buys (?P<a>\d+) (?P<box>\w+) with (?P<b>\d+) (?P<item>\w+) in each\. \w+ "
                   r"(?P<verb>gives away|finds) (?P<c>\d+) (?:more )?\w+\. How many")


def solve(question: str) -> tuple[str, str] | None:
    """(rationale, answer) for a step-task or look-up question, or None."""
    m = TWOHOP.search(question)
    if m:
        has = dict((n, t) for n, t in re.findall(r"(\w+) has an? (\w+)", m["has"]))
        where = dict(re.findall(r"the (\w+) is in the (\w+)", m["where"], flags=re.I))
        thing = has.get(m["who"])
        place = where.get(thing) if thing else None
        if place:
            return f"{m['who']} has a {thing}. The {thing} is in the {place}.", place
    m = LOOKUP.search(question)
    if m:  # the look-up task: the one clause that answers it (what the demo's lookup-cot prompt asks for)
        for who, colour, thing in re.findall(r"(\w+) has an? (\w+) (\w+)", m["has"]):
            if (who, thing) == (m["who"], m["thing"]):
                return f"{who} has a {colour} {thing}.", colour
    m = ARITH.search(question)
    if m:
        a, b, c = int(m["a"]), int(m["b"]), int(m["c"])
        total = a * b
        value, sign = (total - c, "-") if m["verb"] == "gives away" else (total + c, "+")
        return f"{a} {m['box']} with {b} {m['item']} each is {a} * {b} = {total} {m['item']}. {total} {sign} {c} = {value}.", str(value)
    return None


class StepTeacher(rd.Teacher):
    name = "step-teacher"

    def identity(self) -> dict:
        return {"teacher": self.name, "version": 2}  # bump "version" when solve() changes: it is part of the cache key

    async def complete(self, request: rd.Request) -> rd.Completion:
        text = request.messages[-1]["content"]
        question = text.rsplit("Q:", 1)[-1]
        solved = solve(question)
        reply = f" {solved[0]} So the answer is {solved[1]}." if solved else " I cannot read this question."
        return rd.Completion(choices=[rd.Choice(reply)] * request.n, usage={"prompt_tokens": 0, "completion_tokens": 0}, cost=0.0)


@rd.hookimpl
def register_teachers(register):
    register("step-teacher", lambda model=None, **options: StepTeacher())
