"""Is LiteLLM's aiohttp route (`aiohttp_openai/MODEL`) a drop-in for the `openai/MODEL` route against an
OpenAI-compatible server? Same requests to the fake server, both routes, through `litellm.acompletion`:

    python benchmarks/aiohttp_route.py

Checks what the engine relies on: token usage (costs, --max-cost, tpm limits), the HTTP status of a refusal (400:
recorded, not retried) and of a rate limit (429 with Retry-After: waited as the server asks), a second event loop in
one process (the Python API runs each `generate` in its own), and the CPU per call (1,000 calls, concurrency 64,
100 ms per request, one event loop). Writes benchmarks/results/aiohttp_route.md.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rationale_distill.testing.fake_openai import Faults, FakeOpenAI  # noqa: E402
from rationale_distill.generation.teachers import import_litellm, map_error  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROUTES = ("openai/bench", "aiohttp_openai/bench")


class Where:  # what map_error needs to word an error
    def __init__(self, model, base):
        self.model, self.api_base, self.provider, self.api_key_env = model, base, model.split("/")[0], None


async def ask(litellm, model, base, content="What is 2 + 3?", timeout=10):
    return await asyncio.wait_for(litellm.acompletion(model=model, messages=[{"role": "user", "content": content}], api_base=base,
                                                      api_key="EMPTY", num_retries=0, max_retries=0, timeout=timeout), timeout)  # fmt: skip


def outcome(litellm, model, base, faults=None, refuse=None, loops=1) -> str:
    with FakeOpenAI(faults=faults or Faults(), refuse=refuse) as server:
        said = []
        for _ in range(loops):
            try:
                r = asyncio.run(ask(litellm, model, server.base_url))
                said.append(f"ok, usage {r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens")
            except Exception as exc:  # noqa: BLE001 - the point is what each route raises
                e = map_error(exc, Where(model, server.base_url))
                retry = f", retry after {e.retry_after:g} s" if e.retry_after is not None else ""
                said.append(f"{e.kind} (HTTP {e.status}{retry}{', retried' if e.retryable else ''})")
        return "; then ".join(said)


def cpu_per_call(litellm, model, n=1000) -> str:
    with FakeOpenAI(faults=Faults(latency=0.1)) as server:

        async def run():
            sem = asyncio.Semaphore(64)

            async def one(i):
                async with sem:
                    return await ask(litellm, model, server.base_url, f"What is {i} + 1?", timeout=60)

            await asyncio.gather(*(one(i) for i in range(50)))  # warm: connections, lazy imports
            started = time.process_time()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.process_time() - started

        try:
            return f"{asyncio.run(run()) / n * 1000:.2f} ms (server in-process: both routes pay its share)"
        except Exception as exc:  # noqa: BLE001
            return f"failed: {type(exc).__name__}: {str(exc)[:120]}"


def main() -> None:
    if sys.argv[1:2] == ["--one"]:  # one check, one route, in a fresh process (the aiohttp route keeps a session per process)
        return print(CHECKS[sys.argv[3]](import_litellm(), sys.argv[2]))
    lines = [f"| check | `{ROUTES[0]}` | `{ROUTES[1]}` |", "|---|---|---|"]
    for name in CHECKS:
        said = [subprocess.run([sys.executable, __file__, "--one", route, name], capture_output=True, text=True, timeout=300).stdout.strip().splitlines()[-1:] or ["(no output)"]
                for route in ROUTES]  # fmt: skip
        lines.append(f"| {name} | {said[0][0]} | {said[1][0]} |")
        print(lines[-1], flush=True)
    version = importlib.metadata.version("litellm")
    text = "\n".join([f"# LiteLLM {version}: `openai/` vs `aiohttp_openai/` against an OpenAI-compatible server", "",
                      "`python benchmarks/aiohttp_route.py`: each check in a fresh process; errors as the engine maps them "
                      "(kind, status, whether retried)", "", *lines, ""])  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aiohttp_route.md").write_text(text)
    print(text)


REFUSE = lambda body: (400, "invalid_request_error", "refused by the content filter")  # noqa: E731
CHECKS = {
    "a normal answer": lambda litellm, m: outcome(litellm, m, None),
    "a 400 refusal": lambda litellm, m: outcome(litellm, m, None, refuse=REFUSE),
    "a 429 with Retry-After: 7": lambda litellm, m: outcome(litellm, m, None, faults=Faults(rate_429=1.0, retry_after="7")),
    "two event loops in one process": lambda litellm, m: outcome(litellm, m, None, loops=2),
    "CPU per call (1,000 calls, c=64, 100 ms)": lambda litellm, m: cpu_per_call(litellm, m),
}


if __name__ == "__main__":
    main()
