"""Do soft targets pay? Knowledge distillation against text SFT on the demo task, at equal data and equal steps.

    python benchmarks/kd.py --seeds 3        # about 17 minutes per seed on 2 idle CPU cores
    python benchmarks/kd.py --plot-only      # rebuild the table and the plot from what is done

Teacher: the demo's Gemma 3 270M behind the engineered few-shot prompt `lookup-cot` (its records come from the
cache of benchmarks/data_efficiency.py: no new teacher call when that has run). The same model is the white-box
teacher of the KD arms (`--kd-source teacher --teacher-model gemma-3-270m`): it reads the engineered prompt and
its own response up to the answer, and the student, which reads only the bare input, is trained towards its
distribution over the answer tokens (context distillation with logits, Snell et al. 2022) and, with multi-task
data, over the rationale tokens.

Arms, on the same examples (the --fraction of questions that kept a correct rationale, chosen by a seeded hash, the
same for every arm at a seed) and the same number of optimiser steps and batch size:

- same size (Gemma 3 270M + LoRA r16): label SFT, label KD (alpha 0.5, T 2, forward KL), multi-task SFT
  (lambda 1), multi-task + KD (kd weight 0.5);
- half depth (Gemma 3 270M with every other layer kept, 9 of 18, the DistilBERT initialisation; full fine-tuning):
  label SFT, label KD.

Each arm is trained in its own process (its wall time, CPU time and peak RSS measured with os.wait4), then scored
on the 100 held-out questions: accuracy against gold and agreement with the prompted teacher. Results are appended
to benchmarks/results/kd.jsonl (a re-run skips finished arms) and summarised in kd.md and kd.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_efficiency import cell, subset, teacher_records  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "kd.jsonl"
COMMON = dict(batch_size=8, max_length=96, eval_split="none", save_strategy="no", logging_steps=4)
ARMS = {  # name: (student kind, build mode, train settings)
    "label SFT": ("same", "label-only", dict(objective="sft")),
    "label KD": ("same", "label-only", dict(objective="kd", kd_alpha=0.5, kd_temperature=2.0)),
    "multi-task SFT": ("same", "rationale", dict(objective="sft", rationale_weight=1.0)),
    "multi-task + KD": ("same", "rationale", dict(objective="multitask+kd", rationale_weight=1.0, kd_weight=0.5, kd_temperature=2.0)),
    "half-depth label SFT": ("half", "label-only", dict(objective="sft")),
    "half-depth label KD": ("half", "label-only", dict(objective="kd", kd_alpha=0.5, kd_temperature=2.0)),
}
SFT_OF = {"label KD": "label SFT", "multi-task + KD": "multi-task SFT", "half-depth label KD": "half-depth label SFT"}
STUDENTS = {"same": dict(lora=True, lora_r=16, learning_rate=5e-4), "half": dict(student_keep_every=2, learning_rate=1e-4)}


def train_one(arm: str, data: str, out: str, seed: int, steps: int) -> None:
    """One arm's training, in this process (the parent measures it)."""
    import rationale_distill as rd

    kind, _, settings = ARMS[arm]
    extra = dict(teacher_model="gemma-3-270m") if settings["objective"] != "sft" else {}
    rd.train(rd.TrainConfig(data=data, student="gemma-3-270m", out=out, seed=seed, max_steps=steps, **COMMON,
                            **STUDENTS[kind], **settings, **extra))  # fmt: skip


def one_run(arm: str, fraction: float, seed: int, steps: dict, records: Path, teacher_test: Path, test_data: str, work: Path) -> dict:
    import rationale_distill as rd

    kind, mode, _ = ARMS[arm]
    sub = subset(records, fraction, seed, work)
    data = work / f"data-{mode}-{fraction}-{seed}"
    if not (data / "build.json").is_file():
        rd.build(str(sub), rd.BuildConfig(records=str(sub), out=str(data), mode=mode, validation_fraction=0.0, test_fraction=0.0, seed=seed))
    report = json.loads((data / "build.json").read_text())
    student = work / f"student-{arm.replace(' ', '_')}-{fraction}-{seed}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--train-one", arm, str(data), str(student), str(seed), str(steps[kind])])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{arm}: training failed (exit {os.waitstatus_to_exitcode(status)})")
    meta = json.loads((student / "rdistill_train.json").read_text())
    evaluation = rd.evaluate(rd.EvalConfig(student=str(student), data=test_data, label_field="answer", latency_samples=1,
                                           teacher_records=str(teacher_test), teacher_latency="records"))  # fmt: skip
    shutil.rmtree(student, ignore_errors=True)
    s = evaluation["student"]
    return {"arm": arm, "fraction": fraction, "seed": seed, "steps": steps[kind], "examples": report["examples_kept"],
            "rows": sum(report["rows"].values()), "accuracy": s["accuracy"], "agreement": s.get("agreement_with_teacher"),
            "train_s": meta["train_runtime_s"], "s_per_step": meta["train_runtime_s"] / steps[kind], "process_wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "soft_targets": (meta.get("soft_targets") or {}).get("train")}  # fmt: skip


def read_runs() -> list[dict]:
    return [json.loads(x) for x in RUNS.read_text().splitlines()] if RUNS.is_file() else []


def table(runs: list[dict]) -> str:
    import statistics

    teacher = json.loads((RESULTS / "data_efficiency_teacher.json").read_text()) if (RESULTS / "data_efficiency_teacher.json").is_file() else None
    lines = ["| arm | student | accuracy, % | agreement with the teacher, % | s / step (median) | vs its SFT arm | peak RSS, MiB (median) | vs its SFT arm | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    median = lambda arm, key: statistics.median(r[key] for r in runs if r["arm"] == arm)  # noqa: E731
    for arm, (kind, _, _) in ARMS.items():
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        acc = cell([r["accuracy"] for r in mine])
        agree = cell([r["agreement"] for r in mine if r["agreement"] is not None])
        step, rss = median(arm, "s_per_step"), median(arm, "peak_rss_mib")
        base = SFT_OF.get(arm)
        ratio = lambda key: f"{median(arm, key) / median(base, key):.2f}x" if base and any(r["arm"] == base for r in runs) else "-"  # noqa: E731
        student = "Gemma 3 270M + LoRA r16" if kind == "same" else "half depth (9 of 18 layers), full fine-tuning"
        lines.append(f"| {arm} | {student} | {acc} | {agree} | {step:.2f} | {ratio('s_per_step')} | {rss:.0f} | {ratio('peak_rss_mib')} | {len(mine)} |")
    from rationale_distill.evaluation.stats import mean_interval

    paired = []
    for kd, sft in SFT_OF.items():  # the same seed = the same examples: compare seed by seed
        by_seed = {r["seed"]: r["accuracy"] for r in runs if r["arm"] == sft}
        diffs = [100 * (r["accuracy"] - by_seed[r["seed"]]) for r in runs if r["arm"] == kd and r["seed"] in by_seed]
        if len(diffs) > 1:
            mean, low, high = mean_interval(diffs)
            paired.append(f"{kd} minus {sft}: {mean:+.1f} points [95% t-interval {low:+.1f} to {high:+.1f}] "
                          f"(per seed: {', '.join(f'{d:+.0f}' for d in diffs)})")  # fmt: skip
    head = [r for r in runs][:1]
    notes = []
    if head:
        r = head[0]
        notes.append(f"Same examples for every arm at a seed ({r['examples']} questions with a correct rationale at fraction "
                     f"{r['fraction']}), batch 8, max length 96, steps: " + ", ".join(sorted({f"{x['arm']}: {x['steps']}" for x in runs})) + ".")  # fmt: skip
    if teacher:
        lo, hi = teacher["ci95"]
        notes.append(f"The prompted teacher itself: {100 * teacher['accuracy']:.1f}% [{100 * lo:.1f}-{100 * hi:.1f}] on the same {teacher['n']} questions.")
    cells = ("Cells: mean ± sd [95% t-interval of the mean] (n seeds) over the 100 held-out questions. Step time and peak "
             "RSS are whole-process medians over the seeds (the same batches for an arm and its SFT arm, so the step-time "
             "ratio is the inverse of the tokens/s ratio); the KD arms' steps include the teacher's forward pass over "
             "its engineered prompt.")  # fmt: skip
    diffs = ("\n\nPaired by seed (the same examples):\n\n" + "\n".join(f"- {p}" for p in paired)) if paired else ""
    return "\n".join(lines) + diffs + "\n\n" + cells + "\n" + "\n".join(notes) + "\n"


def plot(runs: list[dict]) -> None:
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rationale_distill.evaluation.stats import mean_interval

    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, arm in enumerate(arms):
        accs = [100 * r["accuracy"] for r in runs if r["arm"] == arm]
        mean, low, high = mean_interval(accs) if len(accs) > 1 else (statistics.mean(accs), accs[0], accs[0])
        ax.bar(i, mean, color="#4c72b0" if "KD" in arm else "#999999")
        ax.errorbar(i, mean, yerr=[[mean - max(0, low)], [min(100, high) - mean]], color="black", capsize=4)
        ax.scatter([i] * len(accs), accs, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy on 100 held-out questions, %")
    ax.set_title("Soft targets (blue) vs text SFT (grey), equal data and steps; bars: mean, whiskers: 95% t-interval")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(RESULTS / "kd.png", dpi=120)


def write_summary(runs: list[dict], machine: str) -> None:
    text = ("# Soft targets vs text SFT on the demo task\n\nMade by `python benchmarks/kd.py` on " + machine + ". See the script's "
            "docstring for the arms.\n\n" + table(runs) + "\n![accuracy per arm](kd.png)\n")  # fmt: skip
    (RESULTS / "kd.md").write_text(text)
    plot(runs)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the questions with a correct rationale to train on")
    parser.add_argument("--steps", type=int, default=24, help="optimiser steps of every same-size arm")
    parser.add_argument("--half-steps", type=int, default=24, help="optimiser steps of every half-depth arm")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rdistill-data-efficiency"))
    parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores, no GPU")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--train-one", nargs=5, metavar=("ARM", "DATA", "OUT", "SEED", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if args.train_one:
        arm, data, out, seed, steps = args.train_one
        train_one(arm, data, out, int(seed), int(steps))
        return
    if args.plot_only:
        write_summary(read_runs(), args.machine)
        return
    from tqdm import tqdm

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    records, teacher_test = teacher_records(work)
    from rationale_distill.pipeline import demo_config

    test_data = demo_config(out=str(work)).test_data
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown {unknown}; known: {', '.join(ARMS)}")
    done = {(r["arm"], r["fraction"], r["seed"]) for r in read_runs()}
    todo = [(arm, seed) for seed in range(args.seeds) for arm in arms if (arm, args.fraction, seed) not in done]
    steps = {"same": args.steps, "half": args.half_steps}
    for arm, seed in tqdm(todo, desc="kd benchmark", unit="run"):
        result = one_run(arm, args.fraction, seed, steps, records, teacher_test, test_data, work)
        RESULTS.mkdir(exist_ok=True)
        with RUNS.open("a") as fh:
            fh.write(json.dumps(result) + "\n")
        tqdm.write(f"{arm} seed {seed}: accuracy {100 * result['accuracy']:.1f}%, {result['s_per_step']:.2f} s/step, "
                   f"peak RSS {result['peak_rss_mib']:.0f} MiB")  # fmt: skip
    write_summary(read_runs(), args.machine)


if __name__ == "__main__":
    main()
