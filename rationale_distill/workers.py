"""Generation spread over worker processes: one event loop per CPU core.

One Python process driving LiteLLM is CPU-bound at a few milliseconds of client work per call, so at hundreds of
requests per second the event loop, not the provider, is the limit. ``--workers N`` forks N processes after
LiteLLM is imported (each starts warm), gives each a shard of the calls, and lets each run the ordinary
``run_calls`` loop with ``--concurrency`` requests in flight. Each worker appends to its own journal segment; the
parent reads the successes back from the shared cache and the failures and counts from a queue, so the result is
exactly what one process would have written. ``--concurrency``, ``--rpm``, ``--tpm`` and ``--max-cost`` stay totals
for the whole run: each worker gets an even share.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_mod
from dataclasses import replace

from .store import Store


class _Ticker:
    """Stands in for the progress bar inside a worker: each finished call is one message to the parent."""

    def __init__(self, q):
        self.q = q

    def advance(self) -> None:
        self.q.put(("tick",))

    def close(self) -> None:
        pass


def _fresh_http_clients() -> None:
    """Forget the HTTP clients inherited from the parent. LiteLLM caches clients per event loop, and a child's new loop
    can reuse the id of the parent's old one: two processes would then share pooled keep-alive sockets, and a
    response could be read by the wrong process (a request that never completes)."""
    import litellm
    from litellm.caching.llm_caching_handler import LLMClientCache

    litellm.in_memory_llm_clients_cache = LLMClientCache()


def run_in_workers(calls, store: Store, config, stats, progress: bool) -> None:
    import litellm  # noqa: F401 - imported once here, inherited by every forked worker

    from .generate import Stats, _progress, run_calls

    n = config.workers
    shards = [calls[i::n] for i in range(n)]
    # --concurrency, --rpm, --tpm and --max-cost are totals for the run: each worker gets its share.
    worker_config = replace(config, concurrency=max(1, -(-config.concurrency // n)),
                            rpm=None if config.rpm is None else config.rpm / n, tpm=None if config.tpm is None else config.tpm / n,
                            max_cost=None if config.max_cost is None else config.max_cost / n)  # fmt: skip
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def work(i: int) -> None:
        _fresh_http_clients()
        local, mine = Stats(), shards[i]
        journal = Store(store.root, load=False)
        try:
            asyncio.run(run_calls(mine, journal, worker_config, local, progress=False, bar=_Ticker(q)))
        finally:
            journal.close()
            failures = {c.key: c.entry for c in mine if c.entry is not None and not c.entry.get("ok")}
            q.put(("done", i, {"made": local.made, "failed": local.failed, "retries": local.retries, "cost": local.cost,
                               "errors": dict(local.errors)}, failures))  # fmt: skip

    procs = [ctx.Process(target=work, args=(i,), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    bar = _progress(progress, len(calls))
    failures: dict[str, dict] = {}
    done = 0
    try:
        while done < n:
            try:
                msg = q.get(timeout=1.0)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # a worker died without reporting: its unfinished calls are re-made on the next run
                continue
            if msg[0] == "tick":
                bar.advance()
                continue
            _, _, counts, worker_failures = msg
            done += 1
            failures.update(worker_failures)
            stats.made += counts["made"]
            stats.failed += counts["failed"]
            stats.retries += counts["retries"]
            stats.cost += counts["cost"]
            stats.errors.update(counts["errors"])
    finally:
        bar.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    store.refresh()  # every worker's successes, read back from their journal segments (only the new ones)
    for call in calls:
        call.entry = store.get(call.key) or failures.get(call.key) or {"ok": False, "error": "a worker process died"}
