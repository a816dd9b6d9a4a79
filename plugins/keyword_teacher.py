"""Example teacher plugin: a rule-based support-triage teacher. Copy this file to start your own.

Load it with `rdistill --plugins-dir plugins ...`, or package it with an entry point in the
`rationale_distill` group (see README, "Writing a plugin"). Use it as `--teacher keyword-teacher`.

A teacher implements one async method, `complete(request) -> Completion`. Everything else (cache,
journal, retries, rate limits, cost, records, voting) is the engine's job, so this file stays small.
"""

import rationale_distill as rd

QUEUES = {
    "billing": ("charge", "charged", "refund", "invoice", "payment", "price", "vat", "receipt"),
    "technical": ("error", "crash", "down", "bug", "502", "500", "slow", "api", "integration"),
    "account": ("login", "log in", "password", "2fa", "two-factor", "owner", "remove", "user"),
    "sales": ("quote", "upgrade", "enterprise", "demo", "discount", "buy", "plan for"),
}


class KeywordTeacher(rd.Teacher):
    name = "keyword-teacher"

    def identity(self) -> dict:
        # Everything that determines the answer goes here: it is part of the cache key.
        return {"teacher": self.name, "version": 1, "queues": QUEUES}

    async def complete(self, request: rd.Request) -> rd.Completion:
        message = request.messages[-1]["content"].lower()
        for queue, words in QUEUES.items():
            hits = [w for w in words if w in message]
            if hits:
                text = f"The message mentions {', '.join(repr(h) for h in hits)}, which the {queue} team owns. So the answer is {queue}."
                break
        else:
            text = "The message asks for nothing specific; it is feedback. So the answer is feedback."
        return rd.Completion(choices=[rd.Choice(text)] * request.n, usage={"prompt_tokens": 0, "completion_tokens": 0}, cost=0.0)


@rd.hookimpl
def register_teachers(register):
    register("keyword-teacher", lambda model=None, **options: KeywordTeacher())
