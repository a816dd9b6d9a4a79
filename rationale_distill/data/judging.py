"""The judge filter's questions: does this rationale support this answer? One call per candidate sample, asked of a
teacher through the generation stage's own loop (``run_calls``), so they are concurrent, cached and journaled (a
re-build pays nothing), retried and costed like any teacher call.
"""

from __future__ import annotations

import asyncio
import re

SYSTEM = ("You check the reasoning behind an answer. Reply with one word: yes if the rationale, using only facts stated "
          "in the question, supports the answer; no if it relies on facts not in the question, is about something "
          "else, or does not lead to the answer.")  # fmt: skip
PARAMS = {"temperature": 0.0, "max_tokens": 4}


def question(record, sample) -> list[dict]:
    user = f"Question: {record.input}\nRationale: {sample.rationale}\nAnswer: {sample.raw_answer}\nDoes the rationale support the answer?"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def verdict(text: str | None) -> str | None:
    """ "yes" or "no" from the judge's first word, else None."""
    m = re.match(r"\W*(yes|no)\b", (text or "").lower())
    return m.group(1) if m else None


def ask_judge(model: str, api_base: str | None, records, build_config, before=()) -> tuple[dict, dict]:
    """Verdicts for every sample whose answer is the example's target and that the filters before the judge keep
    (each judged on its own; the others never reach the judge): {(record id, teacher, sample index): None to keep,
    or the reason to drop}, and a summary."""
    from ..generation.calls import Call, Stats, run_calls
    from ..generation.generate import GenerateConfig
    from ..generation.parsing import same_answer
    from ..generation.store import Store, call_key
    from ..generation.teachers import LiteLLMTeacher, Request, install_providers
    from .dataset import BuildConfig, label_for
    from .filters import Candidate, Context

    build_config = build_config or BuildConfig(records="<in memory>")
    teacher = LiteLLMTeacher(model, api_base=api_base, name=f"judge:{model}")
    calls, asked = [], []
    for record in records:
        target, _ = label_for(record, build_config)  # as the build decides it: an example it drops is not asked about
        if target is None:
            continue
        answer_type = record.prompt.get("answer_type") or "text"
        for sample in record.samples:
            candidate = Candidate(record, sample)
            if not (sample.ok and sample.rationale and same_answer(sample.answer, target, answer_type)):
                continue
            if any(check(candidate, Context(target=target)) for _, check in before):
                continue
            request = Request(messages=question(record, sample), params=dict(PARAMS))
            calls.append(Call(call_key(teacher, request), teacher, request, len(asked), 0))
            asked.append((record.id, sample.teacher, sample.index))
    cache_dir = getattr(build_config, "cache_dir", None)
    store = Store(cache_dir)
    for call in calls:
        call.entry = store.get(call.key)
        call.cached = call.entry is not None
    todo = {c.key: c for c in calls if not c.cached}  # equal questions are asked once
    stats = Stats(inputs=len(calls), calls=len(calls), cached=len(calls) - len(todo))
    if todo:
        from ..plugins import load_plugins

        install_providers(load_plugins())
        config = GenerateConfig(data="<judge>", teachers=[model], api_base=api_base, concurrency=16, cache_dir=cache_dir)
        with store:
            asyncio.run(run_calls(list(todo.values()), store, config, stats, progress=False))
        for call in calls:
            call.entry = call.entry or todo[call.key].entry
    verdicts, said = {}, {"yes": 0, "no": 0, "unclear": 0, "failed": 0}
    for key, call in zip(asked, calls):
        entry = call.entry or {}
        if not entry.get("ok"):
            said["failed"] += 1
            verdicts[key] = f"the judge call failed: {entry.get('error', 'no answer')}"
            continue
        text = (entry.get("choices") or [{}])[0].get("text")
        v = verdict(text)
        said[v or "unclear"] += 1
        verdicts[key] = None if v == "yes" else (f"the judge ({model}) says the rationale does not support the answer"
                                                 if v == "no" else f"the judge ({model}) gave no verdict: {(text or '')[:60]!r}")  # fmt: skip
    summary = {"model": model, "asked": len(calls), "made": stats.made, "cached": stats.cached, "cost_usd": round(stats.cost, 6),
               "verdicts": said}  # fmt: skip
    return verdicts, summary
