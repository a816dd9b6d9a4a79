"""Running teacher calls: one coroutine per call, under a concurrency semaphore, rate limits, a budget and retries.

Read ``run_calls`` top to bottom. Each call:
1. waits for a concurrency slot, then for the rate limiter (inside the slot, so queued calls never burst);
2. is sent; a success is journaled at once (the store flushes every line) and is never paid for again;
3. a transient failure (429, 5xx, timeout, connection) is retried after the provider's Retry-After or a jittered
   exponential backoff; a permanent one (4xx: a refusal, a bad request, a prompt over the context window) is
   journaled with its status and message, and the run goes on with the other inputs;
4. authentication errors and unknown models stop the run at once; so does an unreachable server before any
   request has succeeded.
A provider that returns fewer choices than ``n`` asked for gets the missing samples as separate seeded requests,
and no more ``n`` for the rest of the run. A server's first replies are checked (``server_checks``): one that does
not see the prompt stops the run, and a token count that cannot be right is recounted from the texts.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

from ..errors import GenerationError, Interrupted, TeacherError
from .limits import Budget, RateLimiter, retry_delay
from .server_checks import PromptCheck, plausible_usage
from .store import Store, call_key
from .teachers import Completion, Request, Teacher

STOP_KINDS = {"auth", "not_found"}  # the same for every call: stop at once, nothing is retried
CONNECTION_STOP_AFTER = 3  # connection refusals before any success that end the run


@dataclass
class Call:
    key: str
    teacher: Teacher
    request: Request
    row_index: int
    first_sample: int
    entry: dict | None = None  # the journal entry once done (or found in the cache)
    cached: bool = False


@dataclass
class Stats:
    inputs: int = 0
    calls: int = 0
    cached: int = 0
    made: int = 0
    failed: int = 0
    failed_before: int = 0  # permanent failures journaled by an earlier run, not resent (--retry-failed resends)
    failed_inputs: int = 0
    retries: int = 0
    samples: int = 0
    parse_failures: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_unknown: int = 0
    wall_s: float = 0.0
    answer_type: str = ""  # how answers are read, and where that came from
    errors: Counter = field(default_factory=Counter)  # message -> count
    failures: Counter = field(default_factory=Counter)  # kind -> count (this run's and earlier runs' permanent ones)
    notes: list = field(default_factory=list)  # things the user should know (a provider that ignores n, ...)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["errors"], d["failures"] = dict(self.errors), dict(self.failures)
        d["requests_per_s"] = round(self.made / self.wall_s, 2) if self.wall_s else 0.0
        return d

    def merge(self, counts: dict) -> None:
        """Add a worker process's counts."""
        for name in ("made", "failed", "retries", "cost"):
            setattr(self, name, getattr(self, name) + counts[name])
        self.errors.update(counts["errors"])
        self.failures.update(counts["failures"])
        self.notes.extend(n for n in counts["notes"] if n not in self.notes)

    def counts(self) -> dict:
        return {"made": self.made, "failed": self.failed, "retries": self.retries, "cost": self.cost,
                "errors": dict(self.errors), "failures": dict(self.failures), "notes": list(self.notes)}  # fmt: skip


class Progress:
    """A rich progress bar when asked for (the CLI), nothing otherwise (the Python API, tests)."""

    def __init__(self, enabled: bool, total: int):
        self.bar = None
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("teacher calls", total=total)

    def advance(self) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


async def run_calls(calls: list[Call], store: Store, config, stats: Stats, progress: bool, bar=None,
                    budget: Budget | None = None) -> None:  # fmt: skip
    semaphore = asyncio.Semaphore(config.concurrency)
    limiter = RateLimiter(config.rpm, config.tpm, minute=getattr(config, "rate_window", 60.0))
    budget = budget or Budget(config.max_cost)
    stop: list[TeacherError] = []  # an error that ends the run
    interrupted: list[int] = []  # Ctrl-C / SIGTERM: send nothing new, let what is in flight land in the journal
    refused = [0]  # connection refusals before any success
    ignores_n: set[str] = set()  # teachers seen returning fewer choices than n
    check = PromptCheck()
    usage_noted: set[str] = set()
    bar = bar or Progress(progress, len(calls))

    async def send(teacher: Teacher, request: Request, key: str) -> dict:
        """One request, retried while that may help; returns its journal entry (journaled unless the run stops)."""
        est = teacher.count_tokens(request.messages) + (request.params.get("max_tokens") or 256) * request.n if limiter.tpm else 0
        for attempt in range(config.max_retries + 1):
            async with semaphore:
                # Checked once a slot is free: a call that waited must see a stop or a spent budget.
                if stop or interrupted:
                    return {"ok": False, "error": "skipped: the run stopped", "kind": "stopped"}
                if budget.exhausted():
                    return {"ok": False, "error": "skipped: budget", "kind": "budget"}
                if request.n > 1 and teacher.name in ignores_n:  # learnt while this call waited for its slot
                    return {"ok": False, "error": "ignores n", "kind": "ignores_n"}
                slot = await limiter.acquire(est)
                started = time.perf_counter()
                try:
                    coro = teacher.complete(request)
                    completion = await (coro if teacher.queues_locally else _with_timeout(coro, config.timeout + min(5.0, config.timeout)))
                    error = None
                except asyncio.TimeoutError:
                    error = TeacherError(f"request timed out after {config.timeout:g}s", kind="timeout", retryable=True)
                except TeacherError as exc:
                    error = exc
                except Exception as exc:  # noqa: BLE001 - a plugin teacher's bug: report it, do not retry
                    error = TeacherError(f"{teacher.name}: {type(exc).__name__}: {exc}", kind="teacher_bug")
                latency = time.perf_counter() - started
            if error is None:
                note = plausible_usage(teacher, request, completion)
                if note and teacher.name not in usage_noted:  # once per teacher
                    usage_noted.add(teacher.name)
                    stats.notes.append(note)
                usage = completion.usage or {}
                limiter.settle(slot, (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0))
                entry = journal_entry(key, teacher, request, completion, latency)
                store.put(entry)
                stats.made += 1
                stats.cost += completion.cost or 0.0
                budget.add(completion.cost)
                blind = check.add(teacher, request, entry)
                while check.notes:
                    stats.notes.append(check.notes.pop())
                if teacher.name in check.tripped:  # landed after the stop: no answer either
                    store.revoke([key])
                    return {"ok": False, "error": "skipped: the run stopped", "kind": "stopped"}
                if blind:
                    check.tripped.add(teacher.name)
                    store.revoke(check.keys(teacher.name))
                    stop.append(TeacherError(blind, kind="blind"))
                    return {"ok": False, "error": blind, "kind": "blind"}
                return entry
            if error.kind in STOP_KINDS:
                stop.append(error)
                return {"ok": False, "error": str(error), "kind": error.kind}
            if error.kind == "connection" and stats.made == 0:
                refused[0] += 1
                if refused[0] >= CONNECTION_STOP_AFTER:
                    stop.append(error)
                    return {"ok": False, "error": str(error), "kind": error.kind}
            if error.retryable and attempt < config.max_retries:
                stats.retries += 1
                # Before anything has succeeded, a refused connection is retried quickly: it is about to stop the run.
                cap = 0.5 if error.kind == "connection" and not stats.made else config.max_retry_after
                await asyncio.sleep(retry_delay(attempt, error.retry_after, config.retry_base_delay, cap))
                continue
            return record_failure(key, teacher, error, store, stats, permanent=not error.retryable)

    async def one(call: Call) -> None:
        teacher, request = call.teacher, call.request
        subs = singles(teacher, request) if request.n > 1 else None  # only n-requests can be split
        if subs and (teacher.name in ignores_n or store.get(subs[0][1]) is not None):
            call.entry = await fill(call, subs, [])  # known to ignore n (this run, or an earlier one)
        else:
            entry = await send(teacher, request, call.key)
            got = len(entry.get("choices") or ()) if entry.get("ok") else request.n
            if entry.get("kind") == "ignores_n":
                call.entry = await fill(call, subs, [])
            elif got < request.n:
                if teacher.name not in ignores_n:
                    ignores_n.add(teacher.name)
                    stats.notes.append(f"{teacher.name} returned {got} of {request.n} choices: the rest were asked for "
                                       "as separate seeded requests, and n was not sent to it again this run")  # fmt: skip
                subs = subs or singles(teacher, request)
                call.entry = await fill(call, subs, split_entry(entry, subs, store))
            else:
                call.entry = entry
        bar.advance()

    async def fill(call: Call, subs: list[tuple[Request, str]], have: list[dict]) -> dict:
        """The n samples of ``call`` as n single seeded requests (each cached under its own key), merged."""
        entries = list(have)
        for request, key in subs[len(have) :]:
            entry = store.get(key) or await send(call.teacher, request, key)
            if not entry.get("ok"):
                return entry
            entries.append(entry)
        merged = merged_entry(call, entries)
        store.put(merged)
        return merged

    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()

    def on_signal(sig) -> None:
        if interrupted:  # a second signal: stop now, in-flight calls and all
            for s in signals:
                loop.remove_signal_handler(s)
            signal.raise_signal(signal.SIGINT)
        interrupted.append(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await asyncio.gather(*(one(c) for c in calls))
    finally:
        bar.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
    if interrupted:
        raise Interrupted(f"interrupted: sent nothing new, let the calls in flight finish; {stats.made} calls completed and "
                          "are journaled in the cache; re-run the same command to resume")  # fmt: skip
    if stop:
        done = stats.made
        tail = f"; {done} completed calls are journaled, re-run to resume" if done else "; nothing was written"
        if stop[0].kind == "blind":
            tail = "; its replies were taken out of the cache (they answer no prompt): fix the server, then re-run"
        raise GenerationError(f"stopping: {stop[0]}{tail}")


def singles(teacher: Teacher, request: Request) -> list[tuple[Request, str]]:
    """The n samples of an n-request as n single requests seeded seed + k, with their cache keys (the requests a
    teacher without native ``n`` is sent, so both share the cache)."""
    subs = [replace(request, n=1, seed=None if request.seed is None else request.seed + k) for k in range(request.n)]
    return [(r, call_key(teacher, r)) for r in subs]


def record_failure(key: str, teacher: Teacher, error: TeacherError, store: Store, stats: Stats, permanent: bool,
                   **extra) -> dict:  # fmt: skip
    """Journal a request that failed for good in this run, and count it: a permanent one (a 4xx) is kept and not resent
    until --retry-failed; another is resent by the next run. ``extra``: fields of the entry (a batch id)."""
    entry = {"ok": False, "key": key, "teacher": teacher.name, "error": str(error), "kind": error.kind,
             "status": error.status, "permanent": permanent, **extra, "time": time.time()}  # fmt: skip
    store.put(entry)
    stats.failed += 1
    stats.errors[str(error)] += 1
    stats.failures[error.kind] += 1
    return entry


def merged_entry(call: Call, entries: list[dict]) -> dict:
    """The entries of an n-request's single seeded requests, merged into the n-request's entry (journaled under its
    key, so the next run finds it whole)."""
    return {**entries[0], "key": call.key, "n": call.request.n, "seed": call.request.seed,
            "choices": [c for e in entries for c in e["choices"][:1]],
            "usage": {k: sum((e.get("usage") or {}).get(k, 0) for e in entries) for k in ("prompt_tokens", "completion_tokens")},
            "cost": None if any(e.get("cost") is None for e in entries) else sum(e["cost"] for e in entries),
            "split": True}  # fmt: skip


def split_entry(entry: dict, subs: list[tuple[Request, str]], store: Store) -> list[dict]:
    """A short reply to an n-request, kept as the answers to its first single seeded requests (journaled under their
    keys, so a kill before the rest arrive loses nothing)."""
    if not entry.get("ok"):
        return []
    out = []
    for (request, key), choice in zip(subs, entry["choices"]):
        sub = {**entry, "key": key, "n": 1, "seed": request.seed, "choices": [choice],
               "usage": entry.get("usage") if not out else {"prompt_tokens": 0, "completion_tokens": 0},
               "cost": entry.get("cost") if not out else 0.0}  # fmt: skip
        store.put(sub)
        out.append(sub)
    return out


async def _with_timeout(coro, seconds: float):
    """A safety net for teachers that ignore their timeout. asyncio.timeout (3.11+) costs no extra task per call."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


def journal_entry(key: str, teacher: Teacher, request: Request, completion: Completion, latency: float) -> dict:
    return {
        "ok": True, "key": key, "teacher": teacher.name, "identity": teacher.identity(),
        "n": request.n, "seed": request.seed, "params": request.params,
        "choices": [asdict(c) for c in completion.choices], "usage": completion.usage, "cost": completion.cost,
        "latency_s": round(latency, 4), "time": time.time(),
    }  # fmt: skip
