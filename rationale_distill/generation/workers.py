"""Generation spread over worker processes: one event loop per CPU core.

One Python process driving LiteLLM is CPU-bound at a few milliseconds of client work per call, so at hundreds of
requests per second the event loop, not the provider, is the limit. ``--workers N`` forks N processes after
LiteLLM is imported (each starts warm), gives each a shard of the calls, and lets each run the ordinary
``run_calls`` loop with ``--concurrency`` requests in flight. Each worker appends to its own journal segment; the
parent reads the successes back from the shared cache and the failures and counts from a queue, so the result is
exactly what one process would have written. ``--concurrency``, ``--rpm`` and ``--tpm`` stay totals for the whole
run: each worker gets an even share. ``--max-cost`` is one pooled budget: every worker adds what it spends to a
shared counter and stops when the total reaches it.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import threading
import time
from dataclasses import replace

from ..errors import GenerationError, Interrupted
from .calls import Progress, Stats, run_calls
from .limits import Budget
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


def die_with_parent(parent: int) -> None:
    """A worker must never outlive its parent (a killed parent would leave it paying for calls nobody collects):
    the kernel sends it SIGTERM when the parent dies (Linux), and a watcher thread checks elsewhere. SIGTERM makes
    it stop sending and let its calls in flight land in the journal."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def run_in_workers(calls, store: Store, config, stats, progress: bool) -> None:
    import litellm  # noqa: F401 - imported once here, inherited by every forked worker

    n = config.workers
    shards = [calls[i::n] for i in range(n)]
    # --concurrency, --rpm and --tpm are totals for the run: each worker gets its share. The budget is pooled.
    worker_config = replace(config, concurrency=max(1, -(-config.concurrency // n)),
                            rpm=None if config.rpm is None else config.rpm / n, tpm=None if config.tpm is None else config.tpm / n)  # fmt: skip
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    spent = ctx.Value("d", 0.0)  # USD, all workers together

    parent = os.getpid()

    def work(i: int) -> None:
        die_with_parent(parent)
        _fresh_http_clients()
        local, mine = Stats(), shards[i]
        journal = Store(store.root, load=False)
        try:
            asyncio.run(run_calls(mine, journal, worker_config, local, progress=False, bar=_Ticker(q),
                                  budget=Budget(config.max_cost, shared=spent)))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the parent says it (a stop: bad key, unreachable server)
            q.put(("error", i, type(exc).__name__, str(exc)))
        finally:
            journal.close()
            failures = {c.key: c.entry for c in mine if c.entry is not None and not c.entry.get("ok")}
            q.put(("done", i, local.counts(), failures))

    procs = [ctx.Process(target=work, args=(i,), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    bar = Progress(progress, len(calls))
    failures: dict[str, dict] = {}
    errors: list[str] = []
    done = 0
    interrupted = False
    try:
        while done < n:
            try:
                msg = q.get(timeout=1.0)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # a worker died without reporting: its unfinished calls are re-made on the next run
                continue
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each worker stops sending and lets its calls in flight land
                interrupted = True
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
                continue
            if msg[0] == "tick":
                bar.advance()
                continue
            if msg[0] == "error":
                errors.append((msg[2], msg[3]))
                continue
            _, _, counts, worker_failures = msg
            done += 1
            failures.update(worker_failures)
            stats.merge(counts)
    finally:
        bar.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    store.refresh()  # every worker's successes, read back from their journal segments (only the new ones)
    stopped = [m for kind, m in errors if kind != "Interrupted"]
    if stopped:
        raise GenerationError(stopped[0])
    if interrupted or errors:
        raise Interrupted(f"interrupted: the workers sent nothing new and let their calls in flight finish; {stats.made} "
                          "calls completed and are journaled in the cache; re-run the same command to resume")
    for call in calls:
        call.entry = store.get(call.key) or failures.get(call.key) or {"ok": False, "error": "a worker process died", "kind": "stopped"}
