"""Training step cost: our one-pass multi-task step vs the two-pass reference vs a plain SFT step, same batches.

    python benchmarks/bench_training.py                 # CPU: a small Llama-shaped model, random init (~2 minutes)
    python benchmarks/bench_training.py --device cuda --size 0.5b   # GPU: a ~0.5B Qwen2-shaped model in bf16, + MFU

one-pass   ours: label and rationale rows share one forward pass; L = L_label + lambda * L_rationale
two-pass   google-research/distilling-step-by-step, re-implemented: one forward pass per task, then the sum; each
           task's rows are collated (padded) on their own, as that recipe's per-task batches are
plain-sft  what TRL's SFTTrainer optimises on the same tokens: the model's own mean loss over completion tokens
Each method runs in its own process (so peak memory is its own), with the same seed, rows and AdamW; the three run
in turn for --rounds rounds, and the table gives the median step time over rounds with its range.
Targets: one-pass step time <= 0.6x two-pass; one-pass throughput >= 0.95x plain SFT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {  # hidden, layers, heads, kv heads, intermediate, vocab
    "small": (256, 4, 4, 4, 704, 32000),
    "0.5b": (896, 24, 14, 2, 4864, 151936),  # Qwen2.5-0.5B's shape
}


def batches(n_batches: int, batch: int, vocab: int, seed: int = 0, per_task: bool = False):
    """Half label rows (48-token prompt, 4-token answer), half rationale rows (48-token prompt, 24-token rationale).
    per_task: each batch as two, one per task, each padded on its own (for the two-pass reference)."""
    import torch

    from rationale_distill.training.sft import MultiTaskCollator

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        rows = []
        for i in range(batch):
            task, completion = (0, 4) if i % 2 == 0 else (1, 24)
            ids = torch.randint(5, vocab, (48 + completion,), generator=g).tolist()
            rows.append({"input_ids": ids, "labels": [-100] * 48 + ids[48:], "task_id": task})
        if per_task:
            out.append([MultiTaskCollator(0)([r for r in rows if r["task_id"] == t]) for t in (0, 1)])
        else:
            out.append(MultiTaskCollator(0)(rows))
    return out


def run_method(method: str, size: str, device: str, steps: int, batch: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rationale_distill.training.sft import multitask_loss, task_token_counts

    torch.manual_seed(0)
    hidden, layers, heads, kv, inter, vocab = SIZES[size]
    config = Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                         intermediate_size=inter, vocab_size=vocab, max_position_embeddings=512, tie_word_embeddings=True)  # fmt: skip
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = Qwen2ForCausalLM(config).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    per_task = method == "two-pass"
    raw = batches(steps + 2, batch, vocab, per_task=per_task)
    data = [[{k: v.to(device) for k, v in part.items()} for part in b] if per_task else {k: v.to(device) for k, v in b.items()} for b in raw]

    def step(b):
        if method == "one-pass":
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss, _ = multitask_loss(logits, b["labels"], b["task_ids"], (1.0, 1.0), task_token_counts(b["labels"], b["task_ids"]))
        elif method == "two-pass":
            loss = 0
            for part in b:  # one task's rows, padded on their own
                loss = loss + model(input_ids=part["input_ids"], attention_mask=part["attention_mask"], labels=part["labels"]).loss
        else:
            loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for b in data[:2]:  # warm-up
        step(b)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for b in data[2:]:
        step(b)
    sync()
    elapsed = time.perf_counter() - started
    tokens = sum(int(part["attention_mask"].sum()) for b in data[2:] for part in (b if per_task else [b]))  # real tokens, padding not counted
    params = sum(p.numel() for p in model.parameters())
    result = {"method": method, "step_s": elapsed / steps, "tokens_per_s": tokens / elapsed, "params": params}
    if device == "cuda":
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
        name = torch.cuda.get_device_name()
        flops = next((v for k, v in peak.items() if k in name), None)
        if flops:
            result["mfu"] = 6 * params * result["tokens_per_s"] / flops  # 6 N flops per token (forward + backward)
    else:
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return result


def machine(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"{os.cpu_count()} CPU cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="each method runs once per round, in turn")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args()
    steps = args.steps or (20 if args.device == "cuda" else 10)
    if args.method:
        print(json.dumps(run_method(args.method, args.size, args.device, steps, args.batch)))
        return
    methods = ("one-pass", "two-pass", "plain-sft")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(args.rounds):  # the methods in turn, so a slow spell of the machine hits all of them
        for method in methods:
            cmd = [sys.executable, __file__, "--method", method, "--device", args.device, "--size", args.size, "--steps", str(steps),
                   "--batch", str(args.batch)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {v[-1]['step_s']:.3f} s/step" for m, v in runs.items()), file=sys.stderr)
    mem = "peak_mem_gb" if args.device == "cuda" else "peak_rss_gb"
    results = {}
    for method, xs in runs.items():
        step = [x["step_s"] for x in xs]
        results[method] = {**xs[0], "step_s": statistics.median(step), "step_s_min": min(step), "step_s_max": max(step),
                           "tokens_per_s": statistics.median(x["tokens_per_s"] for x in xs), mem: max(x[mem] for x in xs),
                           "rounds": xs}  # fmt: skip
        if "mfu" in xs[0]:
            results[method]["mfu"] = statistics.median(x["mfu"] for x in xs)
    one, two, plain = results["one-pass"], results["two-pass"], results["plain-sft"]
    lines = [f"| method | step (s), median [min-max] of {args.rounds} rounds | tokens/s | peak memory (GB) |" + (" MFU |" if "mfu" in one else ""),
             "|---|---|---|---|" + ("---|" if "mfu" in one else "")]  # fmt: skip
    for r in (one, two, plain):
        lines.append(f"| {r['method']} | {r['step_s']:.3f} [{r['step_s_min']:.3f}-{r['step_s_max']:.3f}] | {r['tokens_per_s']:,.0f} | {r[mem]:.2f} |"
                     + (f" {100 * r['mfu']:.1f}% |" if "mfu" in r else ""))  # fmt: skip
    # the ratio in each round (the methods of one round ran back to back), then its median and range
    per_round_two = [a["step_s"] / b["step_s"] for a, b in zip(runs["one-pass"], runs["two-pass"])]
    per_round_plain = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["one-pass"], runs["plain-sft"])]
    ratio_two, ratio_plain = statistics.median(per_round_two), statistics.median(per_round_plain)
    results["ratios"] = {"one_over_two_step": per_round_two, "one_over_plain_throughput": per_round_plain}
    lines += ["", f"one-pass step time / two-pass: {ratio_two:.2f}x [{min(per_round_two):.2f}-{max(per_round_two):.2f}] (target <= 0.6x: {'PASS' if ratio_two <= 0.6 else 'MISS'})",
              f"one-pass throughput / plain SFT: {ratio_plain:.2f}x [{min(per_round_plain):.2f}-{max(per_round_plain):.2f}] (target >= 0.95x: {'PASS' if ratio_plain >= 0.95 else 'MISS'})",
              f"model: {args.size} ({one['params'] / 1e6:.1f}M parameters, random init), device {args.device} ({machine(args.device)}), batch {args.batch}, "
              f"{steps} timed steps per run after 2 warm-up steps; ratios: median of the per-round ratios [min-max]"]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = f"training-{args.device}-{args.size}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"# Training step cost ({args.device}, {args.size})\n\n`python benchmarks/bench_training.py --device {args.device} --size {args.size}`\n\n{text}\n")


if __name__ == "__main__":
    main()
