"""The DSPy teacher: a DSPy program (default ``dspy.ChainOfThought``) on ``dspy.LM(engine="litellm")``, so that DSPy's
own HTTP client never runs and our loop does the caching, journaling, retries and costs."""

from __future__ import annotations

import json

from ..errors import UsageError
from .teachers import Choice, Completion, LiteLLMTeacher, Request, Teacher, map_error, redact_url


class DSPyTeacher(Teacher):
    """A DSPy program (default: ``dspy.ChainOfThought`` over ``question -> answer``) on ``dspy.LM(engine="litellm")``.

    The program's inputs come from the data row; its ``reasoning`` and ``answer`` fields become the sample."""

    parser = "dspy"

    def __init__(self, model: str | None = None, program=None, signature: str = "question -> answer",
                 api_base: str | None = None, api_key: str | None = None, api_key_env: str | None = None,
                 name: str | None = None, price=None, **params):  # fmt: skip
        import dspy

        if not model:
            raise UsageError("--teacher dspy:MODEL: the DSPy teacher needs a LiteLLM model string, e.g. dspy:openai/gpt-4o-mini")
        self.model = model
        self.name = name or f"dspy:{model}"
        self.program = program if program is not None else dspy.ChainOfThought(signature)
        self.signature = signature if program is None else type(program).__name__
        self.api_base = api_base
        self.price = price
        self._lite = LiteLLMTeacher(model, api_base=api_base, api_key=api_key, api_key_env=api_key_env, price=price)
        lm_kwargs = {"api_base": api_base} if api_base else {}
        key = self._lite._key()
        if key:
            lm_kwargs["api_key"] = key
        # cache=False: our own cache and journal decide what is paid for; num_retries=0: our loop retries.
        self.lm = dspy.LM(model, engine="litellm", cache=False, num_retries=0, **lm_kwargs, **params)

    def identity(self) -> dict:
        return {"model": self.model, "api_base": redact_url(self.api_base), "dspy_program": self.signature}

    def request_payload(self, request: Request) -> dict:
        """A DSPy program renders its own messages: what goes out is its inputs, its instructions, its (compiled)
        demos, the adapter and the sampling settings."""
        import dspy

        adapter = dspy.settings.adapter
        return {"inputs": self._inputs(request), "seed": request.seed, "params": self._config(request),
                "adapter": type(adapter).__name__ if adapter is not None else "ChatAdapter",
                "predictors": [{"name": name, "instructions": p.signature.instructions, "fields": list(p.signature.fields),
                                "demos": [d.toDict() if hasattr(d, "toDict") else dict(d) for d in p.demos]}
                               for name, p in self.program.named_predictors()]}  # fmt: skip

    def _inputs(self, request: Request) -> dict:
        return {k: v for k, v in request.inputs.items() if k in _program_inputs(self.program, request.inputs)}

    def _config(self, request: Request) -> dict:
        return {k: v for k, v in request.params.items() if k in ("temperature", "max_tokens", "top_p")}

    async def complete(self, request: Request) -> Completion:
        import dspy

        inputs, config = self._inputs(request), self._config(request)
        if request.seed is not None:
            config["rollout_id"] = request.seed
        # A copy per call: the seed goes out with its request, and the copy's own history holds this call's responses
        # alone (finish reasons), however many calls run at once.
        lm = self.lm.copy(seed=request.seed) if request.seed is not None else self.lm.copy()
        try:
            with dspy.context(lm=lm, track_usage=True):
                prediction = await self.program.acall(**inputs, config=config) if config else await self.program.acall(**inputs)
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ == "AdapterParseError":  # the LM answered, the adapter could not parse it
                raw = getattr(exc, "lm_response", None) or str(exc)
                return Completion(choices=[Choice(text=str(raw), fields=None, finish_reason=_finish_reason(lm))])
            raise map_error(getattr(exc, "__cause__", None) or exc, self._lite) from None
        fields_ = {k: prediction.get(k) for k in prediction.keys()}
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        for lm_usage in (prediction.get_lm_usage() or {}).values():
            usage["prompt_tokens"] += int(lm_usage.get("prompt_tokens") or 0)
            usage["completion_tokens"] += int(lm_usage.get("completion_tokens") or 0)
        cost = self._lite.cost_of(usage["prompt_tokens"], usage["completion_tokens"])
        text = json.dumps(fields_, ensure_ascii=False)
        return Completion(choices=[Choice(text=text, fields=fields_, finish_reason=_finish_reason(lm))], usage=usage, cost=cost)


def _finish_reason(lm) -> str | None:
    """The finish reason of a DSPy program's LM calls: "length" if any was cut, else the last one's."""
    reasons = [getattr(c, "finish_reason", None) or (c.get("finish_reason") if isinstance(c, dict) else None)
               for entry in lm.history for c in (getattr(entry.get("response"), "choices", None) or [])[:1]]  # fmt: skip
    return "length" if "length" in reasons else (reasons[-1] if reasons else None)


def _program_inputs(program, available: dict) -> set[str]:
    names = set()
    for _, predictor in program.named_predictors():
        names |= set(predictor.signature.input_fields)
    return names or set(available)


