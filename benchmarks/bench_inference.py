"""Student vs teacher inference on the embedded default (run `rdistill demo` first; it trains the student).

    python benchmarks/bench_inference.py [--student runs/demo/student] [--n 32]

teacher  Gemma 3 270M with the engineered few-shot chain-of-thought prompt (`lookup-cot`): it writes the rationale,
         then the answer (greedy, up to 24 new tokens, stops at the end of its answer line)
student  the distilled student: the same model + LoRA, asked with the label prefix only; it writes the answer
Both run in this process through the same `transformers` generate loop, on the same held-out questions: latency
per answer at batch 1 (the mean over 16 questions, with its 95% t-interval), and throughput at batch 16 (three passes
over all the questions: the median, with the range). Results go to benchmarks/results/inference.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def measure(model, tokenizer, prompts: list[str], max_new: int, stop: list[str] | None, special: bool = True) -> dict:
    import torch

    model.eval()
    tokenizer.padding_side = "left"
    kwargs = {"max_new_tokens": max_new, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    if stop:
        kwargs.update(stop_strings=stop, tokenizer=tokenizer)

    def run(batch):
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=special)
        with torch.no_grad():
            return model.generate(**enc, **kwargs), enc["input_ids"].shape[1]

    run(prompts[:1])  # warm-up
    single = []
    for p in prompts[:16]:
        started = time.perf_counter()
        run([p])
        single.append(time.perf_counter() - started)
    passes = []
    for _ in range(3):
        started = time.perf_counter()
        new_tokens = 0
        for i in range(0, len(prompts), 16):
            out, width = run(prompts[i : i + 16])
            new_tokens += int((out[:, width:] != tokenizer.pad_token_id).sum())
        passes.append(len(prompts) / (time.perf_counter() - started))
    from rationale_distill.evaluation.stats import mean_interval

    _, low, high = mean_interval(single)
    return {"latency_s": statistics.mean(single), "latency_ci95": [low, high], "latency_samples": single,
            "throughput_per_s": statistics.median(passes), "throughput_range": [min(passes), max(passes)],
            "prompt_tokens": statistics.mean(len(tokenizer(p, add_special_tokens=special)["input_ids"]) for p in prompts),
            "new_tokens_per_answer": new_tokens / len(prompts)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="runs/demo/student")
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rationale_distill.pipeline import demo_config
    from rationale_distill.plugins import load_plugins
    from rationale_distill.generation.prompts import resolve_prompt
    from rationale_distill.student import load_model

    from rationale_distill.errors import UsageError
    from rationale_distill.evaluation.evaluate import EvalConfig, load_examples
    from rationale_distill.student import as_trained
    from rationale_distill.training import read_student

    try:
        meta = read_student(args.student)
    except UsageError as exc:
        raise SystemExit(f"{exc}; run `rdistill demo` first (or pass --student)") from None
    test_data = demo_config().test_data
    rows = [json.loads(x) for x in Path(test_data).read_text().splitlines()][: args.n]
    spec = resolve_prompt(load_plugins(), "lookup-cot")
    teacher_prompts = [spec.render({**r, "input": r["question"]})[0][0]["content"] for r in rows]
    # The student is asked exactly as `rdistill eval` asks it: its own input template, answer prefix and (for
    # messages data) chat template, all read from its manifest.
    examples = load_examples(EvalConfig(student=args.student, data=test_data, input_field="question", limit=args.n), meta)
    chat = meta["dataset"]["config"].get("format") == "messages"

    teacher_model, tok = load_model("gemma-3-270m")
    teacher = measure(teacher_model, tok, teacher_prompts, 24, list(spec.stop))
    del teacher_model
    student_model, tok = load_model(args.student)
    student_prompts, special = as_trained(tok, [e.prompt for e in examples], chat)
    student = measure(student_model, tok, student_prompts, 16, None, special)

    speedup = teacher["latency_s"] / student["latency_s"]
    throughput = student["throughput_per_s"] / teacher["throughput_per_s"]
    lines = ["| | latency per answer (s, batch 1; mean [95% CI]) | answers/s (batch 16; median [range] of 3) | prompt tokens | new tokens per answer |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, r in (("teacher (prompted)", teacher), ("student (distilled)", student)):
        (lo, hi), (tlo, thi) = r["latency_ci95"], r["throughput_range"]
        lines.append(f"| {name} | {r['latency_s']:.3f} [{lo:.3f}-{hi:.3f}] | {r['throughput_per_s']:.2f} [{tlo:.2f}-{thi:.2f}] | "
                     f"{r['prompt_tokens']:.0f} | {r['new_tokens_per_answer']:.1f} |")  # fmt: skip
    lines += ["", f"student vs teacher: {speedup:.1f}x lower latency, {throughput:.1f}x the throughput ({args.n} held-out questions, 16 timed one at a time, {os.cpu_count()} CPU cores, one run)"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps({"teacher": teacher, "student": student, "n": args.n}, indent=2) + "\n")
    (RESULTS / "inference.md").write_text(f"# Student vs teacher inference\n\n`python benchmarks/bench_inference.py`\n\n{text}\n")


if __name__ == "__main__":
    main()
