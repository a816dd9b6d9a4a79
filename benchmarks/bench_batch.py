"""Batch mode against online mode on the same inputs: HTTP requests sent, submission overhead, wall and CPU time, cost.

    python benchmarks/bench_batch.py            # N=2,000, 3 interleaved rounds (about 2 minutes on 2 cores)
    python benchmarks/bench_batch.py --quick    # N=200, 1 round

Both modes run `rdistill generate` as whole processes (launch to records written) against the project's test server
(rationale_distill.testing.fake_openai, in this process) with no added latency, as teacher `openai/gpt-4o-mini` so that
LiteLLM's price map prices both: online at its online rates, batch at its batch rates. The server answers a batch's
lines as soon as it is created (a real provider takes minutes to hours), so batch mode's wall time here is the
engine's own overhead: building and uploading the file, creating the batch, polling (every 0.2 s here), downloading
the output and writing records. The server counts every HTTP request it receives, by route.
Results go to benchmarks/results/generation_batch.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import RDISTILL, questions, whole_process  # noqa: E402

from rationale_distill.testing.fake_openai import FakeOpenAI  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "openai/gpt-4o-mini"


def one(server: FakeOpenAI, n: int, batch: bool, tag: str) -> dict:
    work = Path(tempfile.mkdtemp())
    data, prompt, out = work / "rows.jsonl", work / "bench.yaml", work / "out.jsonl"
    data.write_text("".join(json.dumps({"input": q}) + "\n" for q in questions(n, tag)))
    prompt.write_text("name: bench\ntemplate: '{input}'\nanswer_type: number\n")
    cmd = [RDISTILL, "generate", str(data), "--teacher", MODEL, "--api-base", server.base_url, "--prompt", str(prompt),
           "--concurrency", "64", "--cache-dir", str(work / "cache"), "--out", str(out)]  # fmt: skip
    if batch:
        cmd += ["--batch", "--batch-poll", "0.2", "--batch-poll-max", "0.2"]
    server.http.clear()
    batches_before = len(server.submissions)
    launched = time.time()
    result = whole_process(cmd, out, n)
    samples = [s for line in out.read_text().splitlines() for s in json.loads(line)["samples"]]
    assert all(s.get("answer") for s in samples), "every input answered"
    row = {"mode": "batch" if batch else "online", "n": n, "wall_s": result["s"], "cpu_s": result["cpu_s"],
           "http_requests": sum(server.http.values()), "by_route": dict(server.http), "cost": sum(s["cost"] for s in samples),
           "prompt_tokens": sum(s["usage"].get("prompt_tokens", 0) for s in samples),
           "completion_tokens": sum(s["usage"].get("completion_tokens", 0) for s in samples)}  # fmt: skip
    if batch:
        made = list(server.batches.values())[batches_before:]
        row.update(batches=len(made), submitted_s=max(b["_created_wall"] for b in made) - launched,
                   uploaded_bytes=sum(len(server.files[b["input_file_id"]]["bytes"]) for b in made))  # fmt: skip
    return row


def median_range(rows: list[dict], key: str, fmt: str) -> str:
    values = [r[key] for r in rows]
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--note", default="", help="what else the machine was doing, for the results file")
    args = parser.parse_args()
    n, rounds = (200, 1) if args.quick else (2000, args.rounds)
    rows = []
    with FakeOpenAI() as server:
        for r in range(rounds):  # interleaved, so drift on the machine hits both modes alike
            for batch in (False, True):
                rows.append({**one(server, n, batch, f"r{r}"), "round": r})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "by_route"}), flush=True)
    online = [r for r in rows if r["mode"] == "online"]
    batch = [r for r in rows if r["mode"] == "batch"]
    ratio = [b["cost"] / o["cost"] for o, b in zip(online, batch)]
    md = [f"# Batch mode vs online mode, N={n:,} inputs, {MODEL} priced by LiteLLM, {rounds} interleaved round(s), 2 CPU cores",
          "", f"`python benchmarks/bench_batch.py{' --quick' if args.quick else ''}`", "",
          "Median [range] over the rounds. Whole processes, launch to records written, against the test server with no added "
          "latency; it answers a batch at once (a real provider takes minutes to hours), so batch wall time is the engine's overhead."
          + (f" {args.note}" if args.note else ""),
          "", "| | online | batch |", "|---|---|---|",
          f"| HTTP requests to the provider | {median_range(online, 'http_requests', ',.0f')} | {median_range(batch, 'http_requests', ',.0f')} |",
          f"| of which | {', '.join(f'{k}: {v:,}' for k, v in online[-1]['by_route'].items())} | {', '.join(f'{k}: {v}' for k, v in batch[-1]['by_route'].items())} |",
          f"| batches (files uploaded) | - | {median_range(batch, 'batches', '.0f')} ({median_range(batch, 'uploaded_bytes', ',.0f')} bytes) |",
          f"| launch to batch created (submission overhead) | - | {median_range(batch, 'submitted_s', '.2f')} s |",
          f"| wall time | {median_range(online, 'wall_s', '.2f')} s | {median_range(batch, 'wall_s', '.2f')} s |",
          f"| CPU time | {median_range(online, 'cpu_s', '.2f')} s | {median_range(batch, 'cpu_s', '.2f')} s |",
          f"| tokens (prompt / completion) | {online[-1]['prompt_tokens']:,} / {online[-1]['completion_tokens']:,} | {batch[-1]['prompt_tokens']:,} / {batch[-1]['completion_tokens']:,} |",
          f"| cost (LiteLLM's prices) | ${statistics.median(r['cost'] for r in online):.6f} | ${statistics.median(r['cost'] for r in batch):.6f} |",
          f"| batch cost / online cost | | {statistics.median(ratio):.3f} |", ""]  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation_batch.md").write_text("\n".join(md))
    (RESULTS / "generation_batch.json").write_text(json.dumps({"n": n, "rounds": rounds, "model": MODEL, "runs": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
