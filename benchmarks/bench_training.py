"""Training step cost: our one-pass multi-task step vs the two-pass reference vs a plain SFT step, same batches.

    python benchmarks/bench_training.py                 # CPU: a small Llama-shaped model, random init (~2 minutes)
    python benchmarks/bench_training.py --device cuda --size 0.5b   # GPU: a ~0.5B Qwen2-shaped model in bf16, + MFU
    python benchmarks/bench_training.py --size 270m --steps 3 --rounds 2   # the embedded student's shape (vocabulary 262k)
    python benchmarks/bench_training.py --student gemma-3-270m --lora --methods one-pass,one-pass-full-logits --steps 4 --rounds 3
                                                    # the embedded pretrained student with LoRA, as the benchmarks train it
    python benchmarks/bench_training.py --methods kd,kd-full-logits --rounds 5   # the soft-target step, head masked or not

one-pass   ours, as the trainer runs it: label and rationale rows share one forward pass, L = L_label + lambda *
           L_rationale, and the LM head runs at completion positions only (a boolean logits_to_keep)
one-pass-full-logits   the same step with the LM head at every position (the trainer before the head mask; what a
           model whose forward takes no logits mask gets)
two-pass   google-research/distilling-step-by-step, re-implemented: one forward pass per task, then the sum; each
           task's rows are collated (padded) on their own, as that recipe's per-task batches are
plain-sft  what TRL's SFTTrainer optimises on the same tokens: the model's own mean loss over completion tokens
kd         the trainer's multitask+kd step with a white-box teacher (--kd-source teacher): one-pass's loss plus the
           full-vocabulary divergence to a teacher of the same shape (another random init, or the same pretrained
           student), from the student's hidden states at the completion positions (TRL's chunked kernel); the LM head
           at completion positions only
kd-full-logits   the same step with the LM head at every position (the trainer's KD step before the head mask)
Each method runs in its own process (so peak memory is its own), with the same seed, rows and AdamW; the three run
in turn for --rounds rounds, and the table gives the median step time over rounds with its range.
Targets: one-pass step time <= 0.6x two-pass; one-pass throughput >= 0.95x plain SFT; one-pass step time <= 0.8x
one-pass-full-logits; kd step time <= 0.8x kd-full-logits.
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
    "270m": (640, 18, 4, 1, 2048, 262144),  # Gemma 3 270M's widths and vocabulary (the embedded student), Qwen2-shaped
}


METHODS = ("one-pass", "one-pass-full-logits", "two-pass", "plain-sft", "kd", "kd-full-logits")
TARGETS = (  # (the method, the other method, what is compared, target, in words)
    ("one-pass", "one-pass-full-logits", "step_s", 0.8, "step time"),
    ("one-pass", "two-pass", "step_s", 0.6, "step time"),
    ("one-pass", "plain-sft", "tokens_per_s", 0.95, "throughput"),
    ("kd", "kd-full-logits", "step_s", 0.8, "step time"),
)


def batches(n_batches: int, batch: int, vocab: int, seed: int = 0, per_task: bool = False):
    """Half label rows (48-token prompt, 4-token answer), half rationale rows (48-token prompt, 24-token rationale).
    per_task: each batch as two, one per task, each padded on its own (for the two-pass reference)."""
    import torch

    from rationale_distill.training.multitask import MultiTaskCollator

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


def make_model(size: str, device: str, student: str | None, lora: bool, seed: int = 0):
    """A Qwen2-shaped model of SIZES[size] from a random init, or a real ``student`` (a name the trainer takes); with
    ``lora`` the trainer's default adapter (r 16, all linear layers) on it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(seed)
    if student:
        from rationale_distill.student import load_model

        model = load_model(student, device=device, dtype=dtype)[0]
    else:
        hidden, layers, heads, kv, inter, vocab = SIZES[size]
        config = Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                             intermediate_size=inter, vocab_size=vocab, max_position_embeddings=512, tie_word_embeddings=True)  # fmt: skip
        model = Qwen2ForCausalLM(config).to(device=device, dtype=dtype)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    return model


def run_method(method: str, size: str, device: str, steps: int, batch: int, student: str | None = None, lora: bool = False) -> dict:
    import torch

    from rationale_distill.training.divergence import full_divergence
    from rationale_distill.training.multitask import completion_positions, multitask_loss, rows_at, task_token_counts

    model = make_model(size, device, student, lora)
    if method.startswith("kd"):  # the teacher, read without gradients as the trainer's white-box source reads it
        teacher = make_model(size, device, student, lora=False, seed=1).eval().requires_grad_(False)
        head, teacher_head = model.get_output_embeddings(), teacher.get_output_embeddings().weight
        captured = {}
        head.register_forward_hook(lambda module, args, out: captured.__setitem__("h", args[0]))  # what the head read
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    per_task = method == "two-pass"
    raw = batches(steps + 2, batch, vocab, per_task=per_task)
    data = [[{k: v.to(device) for k, v in part.items()} for part in b] if per_task else {k: v.to(device) for k, v in b.items()} for b in raw]

    def step(b):
        if method.startswith(("one-pass", "kd")):
            at = completion_positions(b["labels"])
            kept = None if method.endswith("full-logits") else at
            keep = {} if kept is None else {"logits_to_keep": kept}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **keep).logits
            loss, _ = multitask_loss(logits, b["labels"], b["task_ids"], (1.0, 1.0), task_token_counts(b["labels"], b["task_ids"]))
            if method.startswith("kd"):  # + kd weight 0.5 * T^2 * the mean divergence at the completion positions (T 2)
                with torch.no_grad():
                    t_hidden = teacher.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[at]
                kd = full_divergence(rows_at(captured["h"], kept, at), head.weight, t_hidden, teacher_head, 0.0, 2.0,
                                     s_model=model, t_model=teacher)  # fmt: skip
                loss = loss + 0.5 * 4.0 * kd.mean()
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
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = {"method": method, "step_s": elapsed / steps, "tokens_per_s": tokens / elapsed, "params": params, "trained_params": trained}
    if device == "cuda":
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
        name = torch.cuda.get_device_name()
        flops = next((v for k, v in peak.items() if k in name), None)
        if flops and not lora:  # 6 N per token counts every weight's gradient: not LoRA's
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
    parser.add_argument("--student", help="a real model instead of a random init (e.g. gemma-3-270m, the embedded student)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (r 16, all linear layers), as the trainer's --lora does")
    parser.add_argument("--methods", default="one-pass,one-pass-full-logits,two-pass,plain-sft", help="comma-separated, of those above (kd and kd-full-logits: the soft-target step)")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args()
    steps = args.steps or (20 if args.device == "cuda" else 10)
    if args.method:
        print(json.dumps(run_method(args.method, args.size, args.device, steps, args.batch, args.student, args.lora)))
        return
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        parser.error(f"--methods: any of {list(METHODS)} (unknown: {sorted(unknown)})")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(args.rounds):  # the methods in turn, so a slow spell of the machine hits all of them
        for method in methods:
            cmd = [sys.executable, __file__, "--method", method, "--device", args.device, "--size", args.size, "--steps", str(steps),
                   "--batch", str(args.batch), *(["--student", args.student] if args.student else []), *(["--lora"] if args.lora else [])]  # fmt: skip
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
    one = results[methods[0]]
    lines = [f"| method | step (s), median [min-max] of {args.rounds} rounds | tokens/s | peak memory (GB) |" + (" MFU |" if "mfu" in one else ""),
             "|---|---|---|---|" + ("---|" if "mfu" in one else "")]  # fmt: skip
    for r in results.values():
        lines.append(f"| {r['method']} | {r['step_s']:.3f} [{r['step_s_min']:.3f}-{r['step_s_max']:.3f}] | {r['tokens_per_s']:,.0f} | {r[mem]:.2f} |"
                     + (f" {100 * r['mfu']:.1f}% |" if "mfu" in r else ""))  # fmt: skip
    lines.append("")
    # the ratio in each round (the methods of one round ran back to back), then its median and range
    results["ratios"] = {}
    for mine, other, key, target, what in TARGETS:
        if mine not in runs or other not in runs:
            continue
        per_round = [a[key] / b[key] for a, b in zip(runs[mine], runs[other])]
        higher_is_better = key == "tokens_per_s"
        verdict = statistics.median(per_round) >= target if higher_is_better else statistics.median(per_round) <= target
        results["ratios"][f"{mine.replace('-', '_')}_over_{other}_{key}"] = per_round
        sign = ">=" if higher_is_better else "<="
        lines.append(f"{mine} {what} / {other}: {statistics.median(per_round):.2f}x [{min(per_round):.2f}-{max(per_round):.2f}] "
                     f"(target {sign} {target}x: {'PASS' if verdict else 'MISS'})")  # fmt: skip
    model = f"{args.student} (pretrained)" if args.student else f"{args.size} (random init)"
    trained = f"{one['params'] / 1e6:.1f}M parameters" + (f" ({one['trained_params'] / 1e6:.2f}M trained: LoRA r 16, all linear layers)" if args.lora else "")
    lines.append(f"model: {model}, {trained}, device {args.device} ({machine(args.device)}), batch {args.batch}, "
                 f"{steps} timed steps per run after 2 warm-up steps; ratios: median of the per-round ratios [min-max]")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = f"training-{args.device}-{args.student or args.size}" + ("-lora" if args.lora else "") + ("-kd" if all(m.startswith("kd") for m in methods) else "")
    cmd = " ".join(sys.argv[1:]) or f"--device {args.device} --size {args.size}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"# Training step cost ({args.device}, {args.student or args.size}{', LoRA' if args.lora else ''})\n\n"
                                        f"`python benchmarks/bench_training.py {cmd}`\n\n{text}\n")  # fmt: skip


if __name__ == "__main__":
    main()
