"""A local Hugging Face model served to LiteLLM as a custom provider, with micro-batched generation.

``local/gemma-3-270m`` (the embedded model) or ``local/<path to a model folder>`` becomes a LiteLLM model string, so a
local teacher goes through exactly the code path of every other teacher: cache, journal, retries, cost (zero),
records. Concurrent requests are gathered for a few milliseconds into one ``generate`` call, so the CPU (or GPU)
works on a batch rather than one sequence at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

MAX_BATCH_SEQUENCES = 16  # sequences per generate() call (prompts x samples)
GATHER_S = 0.02  # how long the batcher waits for more requests to join a batch
MIN_SHARED_PREFIX = 32  # tokens: a batch whose prompts share at least this many computes their key/value cache once


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
    """One model, one worker thread, one queue of jobs.

    Sampling is seeded per sequence (Gumbel-max with a generator per request and sample), so a request's samples
    do not depend on which other requests share its batch. A cancelled request is skipped, never poisons its batch.
    ``close()`` (also at interpreter exit) stops the thread between generation steps."""

    def __init__(self, name: str, device: str = "auto", share_prefix: bool = True):
        self.name = name
        self.device = device
        self.share_prefix = share_prefix  # compute a few-shot prompt's shared prefix once per batch
        self.prefix_tokens_saved = 0  # prompt tokens not recomputed thanks to the shared prefix
        self._prefix: tuple[tuple, object] | None = None  # (prefix token ids, its key/value cache for one row)
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.model = self.tokenizer = None
        self.loaded = threading.Event()
        self.stopping = threading.Event()
        self.batches = 0  # generate() calls made, for tests and benchmarks
        self.requests = 0
        self.thread = threading.Thread(target=self._work, name=f"rdistill-local-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        if self.stopping.is_set():
            raise RuntimeError(f"the local engine for {self.name} is closed")
        self.jobs.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.jobs.put(None)
        self.thread.join(timeout)

    def _load(self) -> None:
        from ..student import load_model, pick_device

        self.model, self.tokenizer = load_model(self.name, device=pick_device(self.device))
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.loaded.set()

    def _work(self) -> None:
        while not self.stopping.is_set():
            first = self.jobs.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + GATHER_S
            while sum(j.n for j in batch) < MAX_BATCH_SEQUENCES:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.stopping.set()
                    break
                batch.append(job)
            # A request cancelled while it waited (its caller timed out or was interrupted) is dropped here.
            batch = [j for j in batch if _claim(j)]
            try:
                if batch and self.model is None:
                    self._load()
                groups: dict[tuple, list[Job]] = {}
                for job in batch:
                    groups.setdefault(job.group, []).append(job)
                for jobs in groups.values():
                    if self.stopping.is_set():
                        raise RuntimeError(f"the local engine for {self.name} was closed")
                    self._generate(jobs)
            except BaseException as exc:  # noqa: BLE001 - hand every error to the waiting callers
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
        while True:  # closed: fail what is still queued, so no caller waits forever
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and _claim(job):
                job.future.set_exception(RuntimeError(f"the local engine for {self.name} was closed"))

    def _generate(self, jobs: list[Job]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        tok, model = self.tokenizer, self.model
        first = jobs[0]
        n = first.n
        # Row i * n + k is sample k of job i (each prompt repeated n times; greedy decoding over seeded noise).
        ids = tok([j.prompt for j in jobs for _ in range(n)])["input_ids"]
        enc, cache = self._batch(ids)
        kwargs = {"do_sample": False, "max_new_tokens": first.max_tokens, "pad_token_id": tok.pad_token_id}
        if cache is not None:
            kwargs["past_key_values"] = cache
        if first.temperature > 0:
            # Row i * n + k is sample k of job i; its seed is the job's seed + k (as separate seeded requests use).
            seeds = [(j.seed if j.seed is not None else random.randrange(2**31)) + k for j in jobs for k in range(n)]
            kwargs["logits_processor"] = LogitsProcessorList([SeededSampling(seeds, first.temperature, model.device)])
        stopping = self.stopping

        class Closed(StoppingCriteria):
            def __call__(self, input_ids, scores, **_):
                return torch.full((input_ids.shape[0],), stopping.is_set(), dtype=torch.bool, device=input_ids.device)

        kwargs["stopping_criteria"] = StoppingCriteriaList([Closed()])
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=tok)
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)  # (len(jobs) * n, prompt + new)
        self.batches += 1
        self.requests += len(jobs)
        prompt_len = enc["input_ids"].shape[1]
        new = out[:, prompt_len:]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        special = {tok.pad_token_id, tok.eos_token_id}
        for i, job in enumerate(jobs):
            mine = []
            for k in range(job.n):
                row = new[i * n + k]
                text = texts[i * n + k]
                stopped = any(s in text for s in job.stop) or bool((row == tok.eos_token_id).any())
                for s in job.stop:
                    text = text.split(s)[0]
                completion_tokens = int(sum(1 for t in row.tolist() if t not in special))
                reason = "stop" if stopped or completion_tokens < job.max_tokens else "length"
                mine.append((text, completion_tokens, reason))
            prompt_tokens = int(enc["attention_mask"][i * n].sum())
            if not job.future.done():
                job.future.set_result((mine, prompt_tokens))


    def _batch(self, ids: list[list[int]]):
        """(input_ids and attention_mask, a key/value cache or None). Without a long shared prefix: left padding.
        With one (the few-shot demos every request repeats): the prefix's cache is computed once (and kept for the
        next batch), copied to every row, and the rows are padded between the prefix and their own suffix; the
        positions follow the attention mask, so each row sees exactly the positions it would alone."""
        import copy

        import torch

        pad = self.tokenizer.pad_token_id
        device = self.model.device
        shared = 0
        if self.share_prefix and len(ids) > 1:
            shortest = min(len(x) for x in ids)
            while shared < shortest - 1 and all(x[shared] == ids[0][shared] for x in ids):
                shared += 1
        cache = None
        if shared < MIN_SHARED_PREFIX:
            shared = 0  # no prefix worth sharing: plain left padding
        else:
            prefix = tuple(ids[0][:shared])
            if self._prefix is None or self._prefix[0] != prefix:
                with torch.no_grad():
                    out = self.model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
                self._prefix = (prefix, out.past_key_values)
            cache = copy.deepcopy(self._prefix[1])
            cache.batch_repeat_interleave(len(ids))
            self.prefix_tokens_saved += shared * (len(ids) - 1)
        width = max(len(x) for x in ids) - shared
        rows = [x[:shared] + [pad] * (width - (len(x) - shared)) + x[shared:] for x in ids]
        mask = [[1] * shared + [0] * (width - (len(x) - shared)) + [1] * (len(x) - shared) for x in ids]
        return {"input_ids": torch.tensor(rows, device=device), "attention_mask": torch.tensor(mask, device=device)}, cache


def _claim(job: Job) -> bool:
    """Mark a job running; False when its caller cancelled it (or it was already answered: a job submitted twice)."""
    try:
        return job.future.set_running_or_notify_cancel()
    except RuntimeError:
        return False


class SeededSampling:
    """Sampling as argmax(logits / T + Gumbel noise), the noise drawn from one generator per sequence: each
    sequence's samples depend on its own seed only, not on the batch it shares (a LogitsProcessor; use greedy)."""

    def __init__(self, seeds: list[int], temperature: float, device):
        import torch

        self.temperature = temperature
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp_(1e-20, 1.0 - 1e-7)))
        return scores.float() / self.temperature + gumbel  # (rows, vocab)


_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def engine(name: str) -> Engine:
    with _LOCK:
        if name not in _ENGINES:
            _ENGINES[name] = Engine(name)
        return _ENGINES[name]


@atexit.register
def close_engines() -> None:
    """Stop every engine's thread before the interpreter tears torch down under it (which ended runs with
    'terminate called without an active exception')."""
    for e in list(_ENGINES.values()):
        e.close()
    _ENGINES.clear()


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
            completion_tokens = sum(t for _, t, _ in results)
            return litellm.ModelResponse(
                model=model,
                choices=[{"index": i, "finish_reason": reason, "message": {"role": "assistant", "content": text}}
                         for i, (text, _, reason) in enumerate(results)],
                usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens},
            )  # fmt: skip

        def completion(self, *args, **kwargs):
            raise NotImplementedError("local models are served asynchronously; use litellm.acompletion")

    return LocalModels()
