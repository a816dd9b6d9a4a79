"""Checks on what a server sends back that no status code reports: a server that does not see the prompt (a chat
template that drops the user's turn, a proxy that loses the body), and token counts that cannot be right."""

from __future__ import annotations

import json

from .teachers import Completion, LiteLLMTeacher, Request, Teacher


class PromptCheck:
    """Is the server seeing the prompt? A chat template that drops the user's turn, or a proxy that loses the body,
    answers every input alike. From each teacher's first ``SAMPLE`` fresh replies to different prompts: the same reply
    to all of them with no answer in it, or a reported prompt-token count far below the prompt's own size, stops the
    run, and those replies are taken out of the cache (they answer no prompt), so a re-run after the fix asks again.
    The same reply *with* an answer (a terse classifier may well say "So the answer is billing." four times) is only
    noted."""

    SAMPLE = 4
    MIN_TEXT = 20  # shorter replies ("blue", "4") may well be the same for different inputs
    MIN_TOKEN_RATIO = 0.25  # reported prompt tokens / the prompt's estimated tokens

    def __init__(self):
        self.seen: dict[str, dict[str, tuple]] = {}  # teacher -> prompt -> (text, reported, estimated, key)
        self.done: set[str] = set()
        self.tripped: set[str] = set()  # teachers found not to see the prompt
        self.notes: list[str] = []

    def add(self, teacher: Teacher, request: Request, entry: dict) -> str | None:
        """Why the run must stop, once the sample is complete; else None. Only for servers reached over HTTP through
        LiteLLM: a model in this process (local/, a plugin's provider) or a plugin teacher has no template to lose."""
        name = teacher.name
        if name in self.done or not isinstance(teacher, LiteLLMTeacher) or teacher.queues_locally:
            return None
        prompt = json.dumps(request.messages, sort_keys=True)
        seen = self.seen.setdefault(name, {})
        if prompt in seen or not entry.get("choices"):
            return None
        reported = (entry.get("usage") or {}).get("prompt_tokens") or 0
        replies = tuple((c.get("text") or "").strip() for c in entry["choices"])
        seen[prompt] = (replies, reported, teacher.count_tokens(request.messages), entry["key"])
        if len(seen) < self.SAMPLE:
            return None
        self.done.add(name)
        if all(0 < reported < self.MIN_TOKEN_RATIO * estimated for _, reported, estimated, _ in seen.values()):
            r, e = next((r, e) for _, r, e, _ in seen.values())
            return (f"{name} reports {r} prompt tokens for a prompt of about {e}: the server is not seeing the whole "
                    "prompt (its chat template drops part of it?); check the server's chat template")  # fmt: skip
        texts = {replies for replies, *_ in seen.values()}
        replies = next(iter(texts))
        text = replies[0] if replies else ""
        if len(texts) == 1 and len(text) >= self.MIN_TEXT:
            if not any(_has_answer(t) for t in replies):
                return (f"{name} gave the same reply to {len(seen)} different prompts ({text[:60]!r}), with no answer in "
                        "it: the server is not seeing the prompt (a chat template that drops the user's turn? a base "
                        "model behind a chat endpoint?); check the server's template, or use a format: text prompt for "
                        "a base model")  # fmt: skip
            self.notes.append(f"{name} gave the same reply to its first {len(seen)} different prompts ({text[:60]!r}): "
                              "check that the server sees the prompt")  # fmt: skip
        return None

    def keys(self, name: str) -> list[str]:
        return [key for *_, key in self.seen.get(name, {}).values()]


def _has_answer(text: str) -> bool:
    from .parsing import ParseFailure, find_answer

    try:
        find_answer(text, None, "text")
        return True
    except ParseFailure:
        return False


def plausible_usage(teacher: Teacher, request: Request, completion: Completion) -> str | None:
    """Some servers (llama-server) count the completion tokens of one choice when n > 1. Where the reported count is
    under half of what the texts hold, count the texts instead (marked in the usage); returns a note for the run."""
    usage = completion.usage or {}
    if request.n < 2 or len(completion.choices) < 2:
        return None
    counted = sum(teacher.count_tokens([{"role": "assistant", "content": c.text}]) - 4 for c in completion.choices)
    reported = usage.get("completion_tokens") or 0
    if reported >= 0.5 * counted:
        return None
    completion.usage = {**usage, "completion_tokens": counted, "completion_tokens_reported": reported}
    cost = teacher.cost_of(usage.get("prompt_tokens") or 0, counted)
    if cost is not None:
        completion.cost = cost
    return (f"{teacher.name} reported {reported} completion tokens for {len(completion.choices)} choices whose texts "
            f"hold about {counted}: tokens (and costs) were counted from the texts instead (llama-server counts one "
            "choice when n > 1)")  # fmt: skip
