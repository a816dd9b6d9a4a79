"""The provider's files and batches API through LiteLLM (retried, one-line errors), and the batch price."""

from __future__ import annotations

import asyncio

from ...errors import GenerationError, UsageError
from ..limits import retry_delay
from ..teachers import redact_url


class BatchAPI:
    """LiteLLM's files and batches functions for one provider and endpoint, each call retried on 429, 5xx and
    connection errors (with the provider's Retry-After), and failing with one line that names the step otherwise."""

    def __init__(self, provider: str, api_base: str | None, api_key: str | None, max_retries: int = 6,
                 base_delay: float = 1.0, cap: float = 60.0):  # fmt: skip
        if provider == "hosted_vllm" and not api_base:
            raise UsageError("--batch with hosted_vllm/: pass --api-base")
        self.provider, self.api_base, self._key = provider, api_base, api_key
        self.max_retries, self.base_delay, self.cap = max_retries, base_delay, cap

    @classmethod
    def of(cls, teacher, config) -> "BatchAPI":
        return cls(teacher.batch_provider, teacher.api_base, teacher._key(), config.max_retries, config.retry_base_delay,
                   config.max_retry_after)  # fmt: skip

    def _kwargs(self) -> dict:
        kw = {"custom_llm_provider": self.provider}
        if self.api_base:
            kw["api_base"] = self.api_base
        if self._key:
            kw["api_key"] = self._key
        return kw

    async def _call(self, what: str, name: str, unseen_file: bool = False, **kwargs):
        """``unseen_file``: a 400/404 saying the file cannot be found is retried too (a file just uploaded is not
        visible to the batches endpoint at once on OpenAI: "Cannot find file file-..., or project ... does not have
        access to it")."""
        from ..teachers import _retry_after, import_litellm, status_and_text

        litellm = import_litellm()
        for attempt in range(self.max_retries + 1):
            try:
                return await getattr(litellm, name)(**self._kwargs(), **kwargs)
            except Exception as exc:  # noqa: BLE001 - every provider error is named, retried or raised as one line
                status, text = status_and_text(exc, self._key)
                transient = status in (408, 409, 429) or (status or 0) >= 500 or (status is None and _connection_like(exc))
                lowered = text.lower()
                transient |= unseen_file and status in (400, 404) and "file" in lowered and ("find" in lowered or "no such" in lowered)
                if transient and attempt < self.max_retries:
                    await asyncio.sleep(retry_delay(attempt, _retry_after(exc), self.base_delay, self.cap))
                    continue
                where = redact_url(self.api_base) or self.provider
                raise GenerationError(f"batch mode: {what} at {where} failed (HTTP {status or '?'}): {text}") from None

    async def upload(self, data: bytes, filename: str) -> str:
        return (await self._call("uploading a request file", "acreate_file", file=(filename, data), purpose="batch")).id

    async def create(self, file_id: str, endpoint: str):
        return await self._call(f"creating the batch of {file_id}", "acreate_batch", completion_window="24h",
                                endpoint=endpoint, input_file_id=file_id, metadata={"rdistill_file": file_id},
                                unseen_file=True)  # fmt: skip

    async def retrieve(self, batch_id: str):
        return await self._call(f"polling {batch_id}", "aretrieve_batch", batch_id=batch_id)

    async def cancel(self, batch_id: str):
        return await self._call(f"cancelling {batch_id}", "acancel_batch", batch_id=batch_id)

    async def content(self, file_id: str) -> bytes:
        return (await self._call(f"downloading {file_id}", "afile_content", file_id=file_id)).content

    async def find(self, file_id: str):
        """The batch made from ``file_id``, if the provider has one (a kill after it was created, before its id was
        journaled): the newest batches first, paged."""
        after = None
        for _ in range(100):  # 10,000 batches back at most
            page = await self._call("listing batches", "alist_batches", limit=100, **({"after": after} if after else {}))
            data = list(getattr(page, "data", None) or [])
            for batch in data:
                if batch.input_file_id == file_id:
                    return batch
            if not data or not getattr(page, "has_more", False):
                return None
            after = data[-1].id
        return None


def _connection_like(exc: Exception) -> bool:
    names = " ".join(type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None).lower()
    return "connection" in names or "timeout" in names or "connection error" in str(exc).lower()


# --- the price ---------------------------------------------------------------------------------------


def batch_cost(teacher, prompt_tokens: int, completion_tokens: int, discount: float) -> float | None:
    """USD at the batch price: LiteLLM's batch rates where its price map has them, else the online price times
    ``discount`` (--batch-discount; --price is an online price too). None when no price is known."""
    online = teacher.cost_of(prompt_tokens, completion_tokens)
    if getattr(teacher, "price", None) is not None or online is None or not hasattr(teacher, "model"):
        return None if online is None else online * discount
    import litellm

    try:
        info = litellm.get_model_info(teacher.model)
    except Exception:  # noqa: BLE001 - no entry: the discount on the online price
        info = {}
    if info.get("input_cost_per_token_batches") is None:
        return online * discount
    from litellm.cost_calculator import batch_cost_calculator
    from litellm.types.utils import Usage

    inp, out = batch_cost_calculator(Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                           total_tokens=prompt_tokens + completion_tokens), teacher.model)  # fmt: skip
    return inp + out
