"""A local Hugging Face model served to LiteLLM as a custom provider, with micro-batched generation.

``local/gemma-3-270m`` (the embedded model) or ``local/<path to a model folder>`` becomes a LiteLLM model string, so a
local teacher goes through exactly the code path of every other teacher: cache, journal, retries, cost (zero),
records. Concurrent requests are gathered for a few milliseconds into one ``generate`` call, so the CPU (or GPU)
works on a batch rather than one sequence at a time.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

MAX_BATCH_SEQUENCES = 16  # sequences per generate() call (prompts x samples)
GATHER_S = 0.02  # how long the batcher waits for more requests to join a batch


@dataclass
class Job:
    prompt: str
    n: int
    temperature: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int | None
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> tuple:
        return (self.n, self.temperature, self.max_tokens, self.stop)


class Engine:
    """One model, one worker thread, one queue of jobs."""

    def __init__(self, name: str, device: str = "auto"):
        self.name = name
        self.device = device
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.model = self.tokenizer = None
        self.loaded = threading.Event()
        self.batches = 0  # generate() calls made, for tests and benchmarks
        self.requests = 0
        self.thread = threading.Thread(target=self._work, name=f"rdistill-local-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        self.jobs.put(job)
        return job.future

    def _load(self) -> None:
        from .student import load_model, pick_device

        self.model, self.tokenizer = load_model(self.name, device=pick_device(self.device))
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.loaded.set()

    def _work(self) -> None:
        while True:
            first = self.jobs.get()
            batch = [first]
            deadline = time.monotonic() + GATHER_S
            while sum(j.n for j in batch) < MAX_BATCH_SEQUENCES:
                try:
                    batch.append(self.jobs.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                if self.model is None:
                    self._load()
                groups: dict[tuple, list[Job]] = {}
                for job in batch:
                    groups.setdefault(job.group, []).append(job)
                for jobs in groups.values():
                    self._generate(jobs)
            except BaseException as exc:  # noqa: BLE001 - hand every error to the waiting callers
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _generate(self, jobs: list[Job]) -> None:
        import torch

        tok, model = self.tokenizer, self.model
        first = jobs[0]
        enc = tok([j.prompt for j in jobs], return_tensors="pt", padding=True).to(model.device)
        sample = first.temperature > 0
        n = first.n
        if first.seed is not None:
            torch.manual_seed(first.seed)
        kwargs = {"do_sample": sample, "max_new_tokens": first.max_tokens, "num_return_sequences": n,
                  "pad_token_id": tok.pad_token_id}  # fmt: skip
        if sample:
            kwargs["temperature"] = first.temperature
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=tok)
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)  # (len(jobs) * n, prompt + new)
        self.batches += 1
        self.requests += len(jobs)
        prompt_len = enc["input_ids"].shape[1]
        new = out[:, prompt_len:]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        for i, job in enumerate(jobs):
            mine = []
            for k in range(job.n):
                text = texts[i * n + k]
                for s in job.stop:
                    text = text.split(s)[0]
                completion_tokens = int((new[i * n + k] != tok.pad_token_id).sum())
                mine.append((text, completion_tokens))
            prompt_tokens = int(enc["attention_mask"][i].sum())
            job.future.set_result((mine, prompt_tokens))


_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def engine(name: str) -> Engine:
    with _LOCK:
        if name not in _ENGINES:
            _ENGINES[name] = Engine(name)
        return _ENGINES[name]


def prompt_of(messages: list[dict]) -> str:
    """A base model has no chat template: the prompt is the messages' text, in order (a `format: text` prompt is one)."""
    return "\n\n".join(str(m.get("content") or "") for m in messages)


def make_provider():
    """The LiteLLM custom handler for ``local/...`` models."""
    import litellm

    class LocalModels(litellm.CustomLLM):
        async def acompletion(self, model, messages, *args, optional_params=None, model_response=None, **kwargs):
            optional_params = optional_params or kwargs.get("optional_params") or {}
            name = model.split("/", 1)[1] if model.startswith("local/") else model
            stop = optional_params.get("stop") or ()
            job = Job(prompt=prompt_of(messages), n=int(optional_params.get("n") or 1),
                      temperature=float(optional_params.get("temperature") or 0.0),
                      max_tokens=int(optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or 128),
                      stop=tuple([stop] if isinstance(stop, str) else stop), seed=optional_params.get("seed"))  # fmt: skip
            results, prompt_tokens = await asyncio.wrap_future(engine(name).submit(job))
            completion_tokens = sum(t for _, t in results)
            return litellm.ModelResponse(
                model=model,
                choices=[{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                         for i, (text, _) in enumerate(results)],
                usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens},
            )  # fmt: skip

        def completion(self, *args, **kwargs):
            raise NotImplementedError("local models are served asynchronously; use litellm.acompletion")

    return LocalModels()
