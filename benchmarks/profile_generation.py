"""Where a generation run's CPU goes: `rdistill generate` under py-spy against the fake server (100 ms per request,
N=2,000, concurrency 64, one process), as a flame graph and a table of samples by library.

    pip install py-spy && python benchmarks/profile_generation.py

Every sample is attributed to the innermost frame that belongs to a known library (ours, LiteLLM, the OpenAI SDK,
httpx, aiohttp, pydantic, asyncio, ...); samples under an import are counted as start-up whatever the module.
Threads are sampled too (LiteLLM runs part of each call in a thread pool). Writes
benchmarks/results/generation_profile.{svg,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import ENV, RDISTILL, questions, start_server  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# (substring of a frame's file, bucket), innermost match wins
LIBRARIES = [("rationale_distill", "rationale-distill (ours)"), ("litellm", "LiteLLM"), ("openai/", "OpenAI SDK"),
             ("httpx", "httpx"), ("httpcore", "httpx"), ("aiohttp", "aiohttp"), ("pydantic", "pydantic"),
             ("asyncio", "asyncio event loop"), ("selectors", "asyncio event loop"), ("json", "json"), ("rich", "rich"),
             ("concurrent/futures", "LiteLLM's thread pool"), ("threading", "LiteLLM's thread pool")]  # fmt: skip


IDLE = ("_worker (concurrent/futures/thread.py", "Condition.wait (threading.py", "Event.wait (threading.py")


def bucket(stack: str) -> str | None:
    """The library a sample's CPU belongs to; None for a thread that waits (py-spy cannot tell a worker blocked in
    the thread pool's queue from a running one: these are dropped)."""
    if stack.rsplit(";", 1)[-1].strip().startswith(IDLE):
        return None
    if "_find_and_load" in stack:
        return "start-up: imports"
    for frame in reversed(stack.split(";")):
        match = re.search(r"\(([^)]*?)(?::\d+)?\)\s*$", frame)
        where = match.group(1) if match else frame
        for needle, name in LIBRARIES:
            if needle in where:
                return name
    return "other (interpreter, stdlib)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).is_file():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    work = Path(tempfile.mkdtemp())
    data, prompt = work / "rows.jsonl", work / "bench.yaml"
    data.write_text("".join(json.dumps({"input": q}) + "\n" for q in questions(args.n, "profile")))
    prompt.write_text("name: bench\ntemplate: '{input}'\nanswer_type: number\n")
    server, base = start_server(0.1)
    try:
        cmd = [RDISTILL, "generate", str(data), "--teacher", "openai/bench", "--api-base", base, "--prompt", str(prompt),
               "--concurrency", "64", "--cache-dir", str(work / "cache"), "--out", str(work / "out.jsonl")]  # fmt: skip
        for fmt, out in (("raw", work / "profile.raw"), ("flamegraph", RESULTS / "generation_profile.svg")):
            (work / "cache").exists() and shutil.rmtree(work / "cache")
            subprocess.run([spy, "record", "-r", str(args.rate), "-f", fmt, "-o", str(out), "--", sys.executable, *cmd],
                           env=ENV, check=True, capture_output=True)  # fmt: skip
    finally:
        server.kill()
    counts: collections.Counter = collections.Counter()
    for line in (work / "profile.raw").read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[bucket(stack)] += int(n)
    idle = counts.pop(None, 0)
    total = sum(counts.values())
    rows = [f"| {name} | {n:,} | {n / total:.1%} |" for name, n in counts.most_common()]
    text = "\n".join([
        f"# Where `rdistill generate` spends its CPU (N={args.n:,}, 100 ms per request, concurrency 64, one process)", "",
        f"`python benchmarks/profile_generation.py`: py-spy at {args.rate} samples/s over the whole process (all threads, idle "
        f"excluded, and {idle:,} samples of thread-pool workers waiting for work dropped); each sample goes to the innermost frame "
        "of a known library. Flame graph: `generation_profile.svg` (it still shows the waiting workers).", "",
        "| where | samples | share |", "|---|---|---|", *rows, ""])  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation_profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
