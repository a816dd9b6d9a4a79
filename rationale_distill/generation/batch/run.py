"""The batch run: submit what is neither cached nor open, poll, collect, follow up (read ``run_batches`` top to
bottom; the package docstring says what each step guarantees)."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ...errors import Interrupted, TeacherError, UsageError
from ..calls import Call, Stats, journal_entry, merged_entry, record_failure, singles, split_entry
from ..store import Store
from ..teachers import error_from_status, redact_url
from .api import BatchAPI, batch_cost
from .journal import TERMINAL, Journal, Submitted, journal_path


@dataclass
class BatchReport:
    batches: list[Submitted]  # every batch of this run's teachers in the journal, this run's last
    submitted_now: int = 0  # batches created by this run
    requests_now: int = 0  # requests in them
    open: int = 0  # batches still running at the provider when the run returned (--no-wait, Ctrl-C)
    queued: int = 0  # requests not yet submitted when the run returned (waiting for room: --batch-max-open, a full queue)
    priced: int = 0  # requests collected by this run with both an online and a batch price
    priced_cost: float = 0.0  # what they cost at the batch price
    online_cost: float = 0.0  # what the same tokens would have cost online
    journal: Path | None = None


def lines_for(calls: list[Call]) -> list[tuple[Call, str, bytes]]:
    """(call, endpoint, the input file line) per call: the request online mode would send, its cache key as
    custom_id."""
    out = []
    for call in calls:
        endpoint, body = call.teacher.batch_request(call.request)
        line = json.dumps({"custom_id": call.key, "method": "POST", "url": endpoint, "body": body}, ensure_ascii=False)
        out.append((call, endpoint, line.encode() + b"\n"))
    return out


def split_files(lines: list[tuple[Call, str, bytes]], max_requests: int, max_bytes: int) -> list[list[tuple[Call, str, bytes]]]:
    """Files within the limits, one (teacher, endpoint) per file, in the calls' order."""
    groups: dict[tuple[str, str], list] = {}
    for item in lines:
        groups.setdefault((item[0].teacher.name, item[1]), []).append(item)
    files = []
    for items in groups.values():
        current, size = [], 0
        for item in items:
            if len(item[2]) > max_bytes:
                raise UsageError(f"--batch-max-bytes {max_bytes}: one request (row {item[0].row_index + 1}) is {len(item[2]):,} bytes; "
                                 "raise the limit or run that row online")  # fmt: skip
            if current and (len(current) >= max_requests or size + len(item[2]) > max_bytes):
                files.append(current)
                current, size = [], 0
            current.append(item)
            size += len(item[2])
        if current:
            files.append(current)
    return files


class BatchProgress:
    """One bar per batch (answered of total, the provider's status, time since submission) when asked for."""

    def __init__(self, enabled: bool):
        self.bar, self.tasks = None, {}
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=False)  # fmt: skip
            self.bar.start()

    def update(self, sub: Submitted) -> None:
        if not self.bar:
            return
        done = (sub.counts.get("completed") or 0) + (sub.counts.get("failed") or 0)
        description = f"{sub.batch_id} {sub.teacher} {sub.status}" + (f" ({sub.counts.get('failed')} failed)" if sub.counts.get("failed") else "")
        if sub.batch_id not in self.tasks:
            self.tasks[sub.batch_id] = self.bar.add_task(description, total=len(sub.keys))
        self.bar.update(self.tasks[sub.batch_id], completed=done, description=description)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


async def run_batches(calls: list[Call], store: Store, config, stats: Stats, progress: bool) -> BatchReport:
    """Submit ``calls`` (unique, uncached) as batches, resume the journal's open ones, wait, collect. Each call's
    ``entry`` is set to its outcome; successes and permanent failures are in ``store``."""
    journal = Journal(journal_path(config.out, config.cache_dir))
    teachers = {c.teacher.name: c.teacher for c in calls}  # each has a batch_provider (generate.check_teachers)
    apis = {name: BatchAPI.of(t, config) for name, t in teachers.items()}
    by_key = {c.key: c for c in calls}
    subs = journal.load()
    report = BatchReport(batches=[], journal=journal.path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    bar = BatchProgress(progress)
    attempts: Counter = Counter()  # follow-up batches each request was put in, this run
    short: dict[str, Call] = {}  # n-requests answered with fewer choices: their samples asked for as singles
    asked: set[str] = set()  # the single requests asked for them
    try:
        # 1. uploaded by an earlier run but never journaled as a batch: find its batch at the provider, or make it now
        for sub in subs.values():
            if sub.batch_id is None and sub.teacher in apis:
                found = await apis[sub.teacher].find(sub.file_id)
                batch = found or await apis[sub.teacher].create(sub.file_id, sub.endpoint)
                sub.batch_id, sub.status = batch.id, batch.status
                journal.append({"event": "batch", "file_id": sub.file_id, "batch_id": batch.id, "status": batch.status,
                                "adopted": found is not None})  # fmt: skip
        # 2. what is neither cached nor in an open batch, as files within the limits; submitted while there is room
        waiting = {k for s in subs.values() if not s.collected for k in s.keys}
        live = [s for s in subs.values() if not s.collected and s.teacher in apis]
        queue = plan_files([c for c in calls if c.key not in waiting], config)
        room = config.batch_max_open or float("inf")  # batches open at once; lowered when the provider says its queue is full

        async def fill() -> None:
            while queue and len(live) < room and not stop.is_set():
                live.append(await submit_file(queue.pop(0), apis, journal, subs, report))

        await fill()
        # 3. wait for each batch to end (--no-wait: look once); collect it at once; follow-ups for what may succeed
        # on a second try
        delay = config.batch_poll
        while live and not stop.is_set():
            retry: list[Call] = []
            for sub in list(live):
                batch = await apis[sub.teacher].retrieve(sub.batch_id)
                sub.seen(batch)
                bar.update(sub)
                if batch.status not in TERMINAL:
                    continue
                live.remove(sub)
                transient, full = await collect(sub, batch, apis[sub.teacher], teachers[sub.teacher], by_key, store, stats, config,
                                                journal, report, short)  # fmt: skip
                if full:  # the provider's queue was full (its enqueued-token limit): back in ours, sent once room frees up
                    if not live:  # nothing else was open: one file is over the limit by itself
                        error = TeacherError(f"{_batch_errors(getattr(batch, 'errors', None))} (one file is over the provider's enqueued-token limit "
                                             "by itself: lower --batch-max-requests)", kind="batch_failed")  # fmt: skip
                        for key in full:
                            fail(by_key.get(key), key, teachers[sub.teacher], error, store, stats, sub)
                    else:
                        queue[:0] = plan_files([by_key[k] for k in full if k in by_key], config)
                        room = len(live)
                        note = f"the provider's batch queue was full ({_batch_errors(getattr(batch, 'errors', None))[:120]}): files wait until a batch ends"
                        if note not in stats.notes:
                            stats.notes.append(note)
                for key, error in transient:
                    attempts[key] += 1
                    if key in by_key and attempts[key] <= config.batch_resubmits:
                        retry.append(by_key[key])
                    else:
                        fail(by_key.get(key), key, teachers[sub.teacher], error, store, stats, sub)
            retry += short_followups(short, by_key, store, asked)
            if retry:
                queue += plan_files(retry, config)
                delay = config.batch_poll
            await fill()
            if not config.batch_wait:
                break
            if live:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 1.5, config.batch_poll_max)
        report.queued = sum(len(f) for f in queue)
        if (live or queue) and not config.batch_wait:  # still running (or waiting for room): the same command goes on
            report.open = len(live)
            for sub in live:
                mark_open(sub, by_key)
            return finish(report, subs, teachers)
        merge_short(short, store, by_key)
        if stop.is_set():
            report.open = len(live)
            unsent = f" ({report.queued} requests not yet submitted)" if report.queued else ""
            raise Interrupted(f"stopped waiting: {len(live)} batch{'es' * (len(live) != 1)} still run at the provider, journaled in "
                              f"{journal.path}{unsent}; re-run the same command to collect them and go on, or `rdistill batches "
                              f"cancel {config.out or journal.path}`")  # fmt: skip
        return finish(report, subs, teachers)
    finally:
        bar.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
        # LiteLLM makes a new OpenAI client per files/batches call and never closes it; the SDK closes one when it is
        # collected, by a task on the running loop. Collect them while the loop still runs, and let those tasks end.
        gc.collect()
        await asyncio.sleep(0)


def mark_open(sub: Submitted, by_key: dict[str, Call]) -> None:
    for key in sub.keys:
        if key in by_key and by_key[key].entry is None:
            by_key[key].entry = {"ok": False, "error": f"waiting in {sub.batch_id}", "kind": "batch_open"}


def finish(report: BatchReport, subs: dict[str, Submitted], teachers: dict) -> BatchReport:
    report.batches = [s for s in subs.values() if s.teacher in teachers]
    return report


def plan_files(calls: list[Call], config) -> list[list[tuple[Call, str, bytes]]]:
    return split_files(lines_for(calls), config.batch_max_requests, config.batch_max_bytes)


async def submit_file(items: list[tuple[Call, str, bytes]], apis: dict, journal: Journal, subs: dict[str, Submitted],
                      report: BatchReport) -> Submitted:  # fmt: skip
    """Upload one file and make its batch; each id is journaled the moment it exists."""
    teacher, endpoint = items[0][0].teacher, items[0][1]
    api = apis[teacher.name]
    data = b"".join(line for _, _, line in items)
    file_id = await api.upload(data, f"rdistill-{int(time.time())}-{report.submitted_now}.jsonl")
    sub = Submitted(file_id, teacher.name, endpoint, api.provider, redact_url(api.api_base), [c.key for c, _, _ in items], len(data),
                    api_key_env=getattr(teacher, "api_key_env", None))  # fmt: skip
    journal.append({"event": "file", "file_id": file_id, "teacher": teacher.name, "endpoint": endpoint, "provider": api.provider,
                    "api_base": sub.api_base, "api_key_env": sub.api_key_env, "keys": sub.keys, "bytes": len(data)})  # fmt: skip
    subs[file_id] = sub
    batch = await api.create(file_id, endpoint)
    sub.batch_id, sub.status = batch.id, batch.status
    journal.append({"event": "batch", "file_id": file_id, "batch_id": batch.id, "status": batch.status})
    report.submitted_now += 1
    report.requests_now += len(items)
    return sub


async def collect(sub: Submitted, batch, api: BatchAPI, teacher, by_key: dict[str, Call], store: Store, stats: Stats,
                  config, journal: Journal, report: BatchReport,
                  short: dict[str, Call]) -> tuple[list[tuple[str, TeacherError]], list[str]]:  # fmt: skip
    """An ended batch's output and error files -> cache entries and failures; returns the (key, error) of each
    request that may succeed on a second try (a transient error, or a request the batch never answered), and the keys
    of a batch the provider refused because its queue was full (to submit again once a batch ends)."""
    ours, seen, transient = set(sub.keys), set(), []
    prices: dict[tuple[int, int], float | None] = {}
    ok = failed = 0
    cost = 0.0
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for raw in (await api.content(file_id)).splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            key = line.get("custom_id") if isinstance(line, dict) else None
            if key not in ours or key in seen:
                continue
            seen.add(key)
            response = line.get("response") or {}
            body = response.get("body") if isinstance(response.get("body"), dict) else {}
            if response.get("status_code") == 200 and not line.get("error") and body.get("choices") is not None:
                ok += 1
                call = by_key.get(key)
                if store.get(key) is not None:  # collected before (a run killed while collecting)
                    if call is not None:
                        call.entry = store.get(key)
                    continue
                completion = teacher.batch_completion(body, sub.endpoint)
                usage = completion.usage or {}
                tokens = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
                if tokens not in prices:  # the same token counts cost the same: one price lookup each
                    prices[tokens] = batch_cost(teacher, *tokens, config.batch_discount)
                price = prices[tokens]
                request = call.request if call is not None else _request_of(body)
                entry = {**journal_entry(key, teacher, request, completion, 0.0), "cost": price, "batch_id": sub.batch_id}
                stats.made += 1
                stats.cost += price or 0.0
                cost += price or 0.0
                if completion.cost is not None and price is not None:  # priced both ways: the comparison
                    report.priced += 1
                    report.online_cost += completion.cost
                    report.priced_cost += price
                if call is not None and request.n > 1 and len(completion.choices) < request.n:
                    split_entry(entry, singles(teacher, request), store)  # the samples it has, kept as singles
                    short[key] = call
                    if not any(n.startswith(f"{teacher.name} returned") and "in a batch" in n for n in stats.notes):
                        stats.notes.append(f"{teacher.name} returned {len(completion.choices)} of {request.n} choices in a batch: the "
                                           "rest were asked for as single seeded requests in a follow-up batch")  # fmt: skip
                    continue
                store.put(entry)
                if call is not None:
                    call.entry = entry
                continue
            error_body = body.get("error") if isinstance(body.get("error"), dict) else {}
            code = (line.get("error") or {}).get("code") if isinstance(line.get("error"), dict) else None
            message = error_body.get("message") or (line.get("error") or {}).get("message") or "no message"
            if code == "batch_expired":
                error = TeacherError(f"the batch {sub.batch_id} expired before answering it", kind="expired", retryable=True)
            else:
                error = error_from_status(response.get("status_code"), " ".join(str(message).split())[:300], teacher)
            if error.retryable:
                transient.append((key, error))
                continue
            failed += 1
            fail(by_key.get(key), key, teacher, error, store, stats, sub, permanent=True)
    missing = [k for k in sub.keys if k not in seen]
    full = missing if batch.status == "failed" and _batch_codes(getattr(batch, "errors", None)) & QUEUE_FULL else []
    if missing and not full:
        errors = getattr(batch, "errors", None)
        why = {"expired": "expired before answering it", "cancelled": "was cancelled before answering it",
               "failed": f"failed: {_batch_errors(errors)}"}.get(batch.status, "ended without answering it")  # fmt: skip
        retryable = batch.status in ("expired", "completed")
        for key in missing:
            error = TeacherError(f"the batch {sub.batch_id} {why}", kind=f"batch_{batch.status}", retryable=retryable)
            if retryable:
                transient.append((key, error))
            else:
                failed += 1
                fail(by_key.get(key), key, teacher, error, store, stats, sub)
    sub.collected, sub.ok, sub.failed, sub.cost = True, ok, failed, cost
    journal.append({"event": "collected", "file_id": sub.file_id, "batch_id": sub.batch_id, "status": batch.status, "ok": ok,
                    "failed": failed, "transient": len(transient), "queue_full": len(full), "cost": round(cost, 8),
                    "counts": sub.counts})  # fmt: skip
    return transient, full


def fail(call: Call | None, key: str, teacher, error: TeacherError, store: Store, stats: Stats, sub: Submitted,
         permanent: bool = False) -> None:  # fmt: skip
    """Journal and count a request's failure as online mode does (``calls.record_failure``), with its batch id."""
    entry = record_failure(key, teacher, error, store, stats, permanent, batch_id=sub.batch_id)
    if call is not None:
        call.entry = entry


def short_followups(short: dict[str, Call], by_key: dict[str, Call], store: Store, asked: set[str]) -> list[Call]:
    """The single seeded requests still missing for n-requests answered short, each a call of its own (once)."""
    out = []
    for call in short.values():
        for request, key in singles(call.teacher, call.request):
            if key in asked or store.get(key) is not None:
                continue
            asked.add(key)
            by_key[key] = Call(key, call.teacher, request, call.row_index, call.first_sample)
            out.append(by_key[key])
    return out


def merge_short(short: dict[str, Call], store: Store, by_key: dict[str, Call]) -> None:
    """n-requests whose single samples are all answered now: merged under the n-request's key, as online; else the
    failure of the first single that failed."""
    for call in short.values():
        keys = [k for _, k in singles(call.teacher, call.request)]
        entries = [store.get(k) for k in keys]
        if all(entries):
            call.entry = merged_entry(call, entries)
            store.put(call.entry)
            continue
        failed = [by_key[k].entry for k, e in zip(keys, entries) if e is None and k in by_key and by_key[k].entry]
        call.entry = failed[0] if failed else {"ok": False, "error": "a sample asked for separately was not answered", "kind": "batch_short"}


def _request_of(body: dict):
    from ..teachers import Request

    params = {k: v for k, v in body.items() if k not in ("model", "messages", "prompt", "n", "seed")}
    return Request(messages=body.get("messages") or [], n=int(body.get("n") or 1), seed=body.get("seed"), params=params)


QUEUE_FULL = {"token_limit_exceeded"}  # OpenAI: "Enqueued token limit reached ... try again once some batches have completed"


def _error_items(errors) -> list:
    """The entries of a batch's ``errors`` (LiteLLM objects, or the dicts of a raw answer)."""
    return getattr(errors, "data", None) or (errors.get("data") if isinstance(errors, dict) else None) or []


def _field(item, name: str):
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _batch_codes(errors) -> set[str]:
    return {_field(e, "code") for e in _error_items(errors)} - {None}


def _batch_errors(errors) -> str:
    texts = [_field(e, "message") or (str(e) if not isinstance(e, dict) else None) for e in _error_items(errors)]
    return "; ".join(t for t in texts if t)[:300] or "the provider gave no reason"
