"""The data-efficiency experiment (Distilling Step-by-Step's central claim, at small scale), on the demo task.

    python benchmarks/data_efficiency.py --seeds 3          # about 20 minutes per seed on 2 CPU cores
    python benchmarks/data_efficiency.py --plot-only        # redraw from what is done
    python benchmarks/data_efficiency.py --lambdas 0,0.25,4 --fractions 0.125,0.25   # the lambda sweep (multi-task)
    python benchmarks/data_efficiency.py --faithful --fractions 0.25 --seeds 3   # multi-task with and without the grounded filter
    python benchmarks/data_efficiency.py --task twohop --teacher program --seeds 3   # a task whose answer needs steps (#14)
    python benchmarks/data_efficiency.py --task arith --teacher gemma --seeds 3 --jobs 2   # two runs at once, one thread each
    python benchmarks/data_efficiency.py --task twohop --teacher program --seeds 3 --fractions 1 --methods label-only   # part of a grid
    python benchmarks/data_efficiency.py --task twohop --teacher program --lambdas 0,0.25,4 --fractions 0.25   # the sweep on a step task
    python benchmarks/data_efficiency.py --task twohop --teacher program --lambdas 1 --schedule linear-decay --fractions 0.25
    python benchmarks/data_efficiency.py --task arith --teacher program --epochs 6 --methods label-only,multi-task --fractions 0.25
                                                            # the same students trained longer, beside the main grid
    python benchmarks/data_efficiency.py --plot-only --task twohop --teacher program   # also data_efficiency-summary.md:
                                                            # every task and teacher, multi-task minus label-only and the goals

Tasks (--task): `lookup` (the demo's "who has what": the rationale is one copied clause), `twohop` (who has what, then
where the thing is) and `arith` (two-step word problems), from examples/make_step_tasks.py; the answer of the last
two depends on an intermediate result the rationale states. Teachers (--teacher): `gemma` (the embedded Gemma 3
270M behind the task's few-shot CoT prompt: the real, noisy teacher, 4 samples per question) or `program`
(plugins/step_teacher.py: correct rationales by rule, so the student-side effect is measured without teacher noise).
Besides label-only, single-task and multi-task, every grid has `label-only (equal steps)`: label-only trained for as
many optimiser steps as multi-task at the same fraction and seed (multi-task sees two rows per example), and the
single-task students' latency is recorded (they must write the rationale before the answer).

Teacher: the demo's prompted Gemma 3 270M, 4 samples per question over all 200 training questions (cached: a
re-run makes no teacher call). Students: Gemma 3 270M + LoRA trained with label-only (standard distillation),
single-task (rationale and answer in one target) and multi-task (ours: [label] and [rationale] rows), on 12.5%,
25%, 50% and 100% of the examples that kept a correct rationale (the same subset for every method at a given
seed), same hyper-parameters, then scored on the 100 held-out questions. Each finished run is appended to
benchmarks/results/data_efficiency.jsonl (with its wall time and torch threads) and skipped on a re-run, so the
experiment resumes after an interruption; a progress bar counts the grid's runs still to make.
The lambda sweep trains multi-task students with other weights on the rationale loss (L = L_label + lambda *
L_rationale; lambda = 0 keeps the [label]/[rationale] rows and their prefixes but learns nothing from rationales, a
control for the prefixes and the doubled row count) into data_efficiency_lambda.{jsonl,md}. --faithful trains
multi-task students on the same subsets built with the `grounded` filter too (a rationale must state facts from the
question and name whom it asks about; the answer filter alone keeps right answers for the wrong reason) into
data_efficiency_faithful.{jsonl,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "data_efficiency.jsonl"
LAMBDA_RUNS = RESULTS / "data_efficiency_lambda.jsonl"
TEACHER = RESULTS / "data_efficiency_teacher.json"
FAITHFUL_RUNS = RESULTS / "data_efficiency_faithful.jsonl"
ANSWER_FILTERS = ["parsed", "agrees", "rationale-length", "dedup"]  # the build's defaults in rationale mode
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
STEP_FRACTIONS = (0.05, 0.125, 0.25, 0.5, 1.0)  # the step tasks: five fractions from 5% to 100%
METHODS = {"label-only": "label-only", "single-task": "single-task", "multi-task": "rationale"}
EQUAL_STEPS = "label-only (equal steps)"  # label-only for as many optimiser steps as multi-task
TASKS = {"lookup": "lookup-cot", "twohop": "twohop-cot", "arith": "arith-cot"}  # task -> the teacher's CoT prompt
TEACHERS = {"gemma": "local/gemma-3-270m", "program": "step-teacher"}


def tag(task: str, teacher: str) -> str:
    """'' for the demo's task and teacher (the original file names), else '-twohop-program' and the like."""
    return "" if (task, teacher) == ("lookup", "gemma") else f"-{task}-{teacher}"


def result_file(path: Path, task: str, teacher: str) -> Path:
    return path.with_name(path.stem + tag(task, teacher) + path.suffix)


def generation(work: Path, task: str, teacher: str, test: bool):
    """(the generate config, plugins) for a task's train or test questions with a teacher."""
    from rationale_distill.pipeline import demo_config, stage_configs
    from rationale_distill.plugins import load_plugins

    run = demo_config(out=str(work))
    gen, _, _ = stage_configs(run)
    data = str(Path(run.data).parent / f"{task}_{'test' if test else 'train'}.jsonl")  # beside the demo's lookup_*.jsonl
    name = f"teacher{'-test' if test else ''}{tag(task, teacher)}.jsonl"
    program = teacher == "program"
    gen = replace(gen, data=data, prompt=TASKS[task], teachers=[TEACHERS[teacher]], limit=None, out=str(work / name),
                  samples=1 if test or program else gen.samples, temperature=0.0 if test else gen.temperature)  # fmt: skip
    if test:
        gen = replace(gen, concurrency=16)
    return gen, load_plugins(plugins_dirs=[str(ROOT / "plugins")] if program else ())


def teacher_records(work: Path, task: str = "lookup", teacher: str = "gemma") -> tuple[Path, Path]:
    """Teacher records on every training question, and the prompted teacher's records on the test questions."""
    import rationale_distill as rd

    train, plugins = generation(work, task, teacher, test=False)
    rd.generate(train, plugins=plugins, progress=True)
    return Path(train.out), teacher_test_records(work, task, teacher)


def teacher_test_records(work: Path, task: str = "lookup", teacher: str = "gemma") -> Path:
    """The prompted teacher's greedy answers on the test questions (cached: a re-run makes no call)."""
    import rationale_distill as rd

    test, plugins = generation(work, task, teacher, test=True)
    rd.generate(test, plugins=plugins, progress=True)
    return Path(test.out)


def subset(records_path: Path, fraction: float, seed: int, work: Path) -> Path:
    """The same examples for every method: those with a correct rationale, ranked by a seeded hash of the id."""
    from rationale_distill.records import read_records, write_jsonl

    records = [r for r in read_records(records_path) if any(s.ok and s.answer == r.label for s in r.samples)]
    records.sort(key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest())
    keep = records[: max(1, round(fraction * len(records)))]
    stem = records_path.stem.replace("teacher", "records", 1)  # records-twohop-program-0.25-0.jsonl, records-0.25-0.jsonl
    path = work / f"{stem}-{fraction}-{seed}.jsonl"
    write_jsonl(path, keep)
    return path


EPOCHS, BATCH = 2, 8


def one_run(method: str, fraction: float, seed: int, records: Path, test_data: str, work: Path, rationale_weight: float = 1.0,
            filters: list[str] | None = None, schedule: str = "constant", max_length: int = 96, epochs: int = EPOCHS) -> dict:  # fmt: skip
    import math
    import time

    import rationale_distill as rd

    started = time.perf_counter()
    sub = subset(records, fraction, seed, work)
    mode = METHODS.get(method, "label-only")

    def dataset(mode):
        data = work / f"data-{sub.stem}-{mode}-{'+'.join(filters or ['default'])}"
        _, report = rd.build(str(sub), rd.BuildConfig(records=str(sub), out=str(data), mode=mode, filters=filters,
                                                       validation_fraction=0.0, test_fraction=0.0, seed=seed))  # fmt: skip
        return data, report

    data, report = dataset(mode)
    max_steps = -1
    if method == EQUAL_STEPS:  # as many steps as the multi-task student of this fraction and seed takes
        multi_rows = sum(dataset("rationale")[1]["rows"].values())
        max_steps = math.ceil(multi_rows / BATCH) * epochs
    student = work / f"student-{method.replace(' ', '_')}-{sub.stem}"
    rd.train(rd.TrainConfig(data=str(data), student="gemma-3-270m", out=str(student), lora=True, epochs=epochs, batch_size=BATCH,
                            learning_rate=5e-4, max_length=max_length, seed=seed,
                            eval_split="none", save_strategy="no", rationale_weight=rationale_weight,
                            rationale_schedule=schedule, max_steps=max_steps))  # fmt: skip
    evaluation = rd.evaluate(rd.EvalConfig(student=str(student), data=test_data, label_field="answer", latency_samples=4 if method == "single-task" else 1))
    shutil.rmtree(student, ignore_errors=True)
    result = {"method": method, "fraction": fraction, "seed": seed, "examples": report["examples_kept"],
              "rows": sum(report["rows"].values()), "accuracy": evaluation["student"]["accuracy"],
              "latency_s": evaluation["student"]["latency_s"], "max_steps": max_steps, "epochs": epochs,
              # each held-out question's answer, in the test file's order: for error analysis (which step went wrong)
              "predictions": [e["student"] for e in evaluation["examples"]],
              # the run's wall time (build, train, evaluate) and the threads it had: what a grid costs
              "wall_s": round(time.perf_counter() - started, 1), "threads": torch_threads()}  # fmt: skip
    if filters:
        result["filters"] = filters
        result["dropped"] = {k: v for k, v in report["filters"].items() if k not in ("kept", "extra-rationale")}
    return result


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def teacher_accuracy(path: Path, out: Path = TEACHER, train: Path | None = None, task: str = "lookup") -> dict:
    """The prompted teacher's accuracy on the test questions, with its 95% Wilson interval, and with ``train`` (its
    records on the training questions) how much of its output survives the gold filter: the training questions with
    at least one right sample (the pool every fraction is drawn from) and the right samples among all. Kept beside the
    results (TEACHER) so that --plot-only can rebuild the table without the work folder."""
    from rationale_distill.evaluation.stats import wilson
    from rationale_distill.records import read_records

    records = read_records(path)
    right = sum(r.majority == r.label for r in records)
    found = {"accuracy": right / len(records), "n": len(records), "ci95": wilson(right, len(records))}
    if train is not None:
        rows = read_records(train)
        samples = [s for r in rows for s in r.samples]
        found["train"] = {"questions": len(rows), "with_a_right_sample": sum(any(s.ok and s.answer == r.label for s in r.samples) for r in rows),
                          "samples": len(samples), "right_samples": sum(s.ok and s.answer == r.label for r in rows for s in r.samples)}  # fmt: skip
        if task != "lookup":
            found["train"]["right_samples_right_first_step"] = right_for_the_right_reason(task, rows)[1]
    out.write_text(json.dumps(found) + "\n")
    return found


def read_runs(path: Path, repair: bool = False) -> list[dict]:
    """The finished runs in a results file. A last line cut short (the machine died while it was written) is left
    out with a warning, so that run is made again (``repair``: and dropped from the file, whole lines kept, so the
    next run is appended after a complete line); a broken line before the last is an error naming the line."""
    lines = path.read_text().splitlines() if path.is_file() else []
    runs = []
    for number, line in enumerate(lines, 1):
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise SystemExit(f"{path}:{number}: not a JSON run ({exc}); mend or delete that line") from None
            print(f"warning: {path}:{number}: the last run was cut short while it was written; it will be made again", file=sys.stderr)
            if repair:
                path.with_suffix(".tmp").write_text("".join(x + "\n" for x in lines[:-1]))
                path.with_suffix(".tmp").replace(path)
    return runs


def mean_sd(accs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds, in percent."""
    return 100 * statistics.mean(accs), 100 * statistics.stdev(accs) if len(accs) > 1 else 0.0


def cell(accs: list[float]) -> str:
    """mean ± sd [95% t-interval of the mean] (n seeds), in percent."""
    from rationale_distill.evaluation.stats import mean_interval

    if not accs:
        return "-"
    mean, sd = mean_sd(accs)
    _, low, high = mean_interval([100 * a for a in accs])
    return f"{mean:.1f} ± {sd:.1f} [{max(0.0, low):.0f}-{min(100.0, high):.0f}] (n={len(accs)})"


def paired_cell(diffs: list[float]) -> str:
    """Paired differences in points: mean [95% t-interval] (each seed); one difference as itself; none as "-"."""
    from rationale_distill.evaluation.stats import mean_interval

    if not diffs:
        return "-"
    if len(diffs) == 1:
        return f"{diffs[0]:+.1f} (n=1)"
    mean, low, high = mean_interval(diffs)
    return f"{mean:+.1f} [{low:+.0f} to {high:+.0f}] ({'/'.join(f'{d:+.0f}' for d in diffs)})"


def paired_table(runs: list[dict], fractions: list[float]) -> str:
    """Multi-task minus each control on the same subset and seed, in points: mean [95% t-interval] (per-seed values).
    Paired, so the seed-to-seed spread of the subsets cancels: tighter than comparing the two columns above."""
    acc = {(r["method"], r["fraction"], r["seed"]): 100 * r["accuracy"] for r in runs}
    lines = ["Paired by seed (multi-task minus the control, points; mean [95% t-interval] (each seed)):", "",
             "| multi-task minus | " + " | ".join(f"{int(f * 100 * 10) / 10}%" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]  # fmt: skip
    for control in ("label-only", EQUAL_STEPS):
        if not any(r["method"] == control for r in runs):
            continue
        cells = []
        for f in fractions:
            diffs = [acc[("multi-task", f, seed)] - acc[(control, f, seed)] for (m, ff, seed) in acc
                     if m == "multi-task" and ff == f and (control, f, seed) in acc]  # fmt: skip
            cells.append(paired_cell(diffs))
        lines.append(f"| {control} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_step(task: str, rationale: str | None) -> str | None:
    """A step task's intermediate result as a rationale states it: the thing the person has (two-hop), the product
    (arithmetic); None where the rationale states none."""
    found = re.search(r"has an? (\w+)\." if task == "twohop" else r"= (\d+)", rationale or "")
    return found.group(1) if found else None


def error_kind(task: str, row: dict, prediction: str) -> str:
    """What a student's answer to a step task's test question is: "right", "first step" (the intermediate result:
    the thing rather than its place, the product before the last step), "wrong hop" (two-hop: the place of
    another person's thing, a first hop gone to the wrong person) or "other"."""
    prediction = (prediction or "").strip()  # None: the student wrote nothing the answer parser takes (an "other")
    if prediction == row["answer"]:
        return "right"
    first = first_step(task, row["reference_rationale"])
    if task == "twohop":
        places = re.findall(r"is in the (\w+)", row["question"])
        return "first step" if prediction == first else "wrong hop" if prediction in places else "other"
    return "first step" if prediction == first else "other"


def right_for_the_right_reason(task: str, records: list) -> tuple[int, int]:
    """(right samples, right samples whose rationale states the right intermediate result) over a teacher's records
    on a step task's training questions: the gold filter keeps an answer, not the reasoning that reached it."""
    rows = {r["id"]: r for r in map(json.loads, (ROOT / "rationale_distill" / "demo" / f"{task}_train.jsonl").read_text().splitlines())}
    right = [(r, s) for r in records for s in r.samples if s.ok and s.answer == r.label]
    return len(right), sum(first_step(task, s.rationale) == first_step(task, rows[r.id]["reference_rationale"]) for r, s in right)


def error_table(runs: list[dict], task: str) -> str:
    """Wrong answers by kind, per method and fraction, over the runs that kept their per-question predictions."""
    if task == "lookup":
        return ""
    test = [json.loads(x) for x in (ROOT / "rationale_distill" / "demo" / f"{task}_test.jsonl").read_text().splitlines()]
    kinds = ["first step", "wrong hop", "other"] if task == "twohop" else ["first step", "other"]
    names = {"first step": "first step's result" + (" (the thing)" if task == "twohop" else " (the product)"),
             "wrong hop": "another thing's place", "other": "other"}  # fmt: skip
    lines = []
    for method in [*METHODS, EQUAL_STEPS]:
        for f in sorted({r["fraction"] for r in runs}):
            pool = [r for r in runs if r["method"] == method and r["fraction"] == f and r.get("predictions")]
            found = [error_kind(task, row, p) for r in pool for row, p in zip(test, r["predictions"])]
            wrong = [k for k in found if k != "right"]
            if wrong:
                cells = " | ".join(f"{100 * wrong.count(k) / len(wrong):.0f}%" for k in kinds)
                lines.append(f"| {method} | {f * 100:g}% | {len(pool)} | {len(wrong)} | {cells} |")
    if not lines:
        return ""
    head = " | ".join(names[k] for k in kinds)
    return ("Wrong answers by kind (runs that kept their per-question predictions; % of the wrong answers):\n\n"
            f"| method | data | runs | wrong answers | {head} |\n|---|---|---|---|" + "---|" * len(kinds) + "\n" + "\n".join(lines))


def plot(teacher: dict | None, task: str = "lookup", who: str = "gemma") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = read_runs(result_file(RUNS, task, who))
    fractions = sorted({r["fraction"] for r in runs}) or list(FRACTIONS)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lines = ["| method | " + " | ".join(f"{int(f * 100 * 10) / 10}%" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
    for method, color in zip([*METHODS, EQUAL_STEPS], ("#636363", "#fd8d3c", "#2b8cbe", "#969696")):
        if not any(r["method"] == method for r in runs):
            continue
        xs, ys, errs, cells = [], [], [], []
        for f in fractions:
            accs = [r["accuracy"] for r in runs if r["method"] == method and r["fraction"] == f]
            cells.append(cell(accs))
            if accs:
                mean, sd = mean_sd(accs)
                xs.append(f)
                ys.append(mean)
                errs.append(sd)
        if xs:
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=color, label=method)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if teacher is not None:
        ax.axhline(100 * teacher["accuracy"], color="#e6550d", linestyle="--", label="prompted teacher")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(fractions), [f"{f:g}" for f in fractions])
    ax.set_xlabel("fraction of training examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    teacher_name = "the prompted Gemma 3 270M" if who == "gemma" else "the programmatic step teacher"
    ax.set_title(f"Data efficiency, task {task}, teacher: {teacher_name}\n(student: Gemma 3 270M + LoRA)", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    png = result_file(RESULTS / "data_efficiency.png", task, who)
    fig.savefig(png, dpi=110)
    table = "\n".join(lines) + "\n\n" + paired_table(runs, fractions)
    errors = error_table(runs, task)
    if errors:
        table += "\n\n" + errors
    note = (f"The teacher ({teacher_name}; greedy, {teacher['n']} test questions): {100 * teacher['accuracy']:.1f}% (95% Wilson interval "
            f"{100 * teacher['ci95'][0]:.1f}-{100 * teacher['ci95'][1]:.1f})" if teacher else "")  # fmt: skip
    if teacher and "train" in teacher:
        t = teacher["train"]
        note += (f". On the {t['questions']} training questions {t['right_samples']} of its {t['samples']} samples give the gold answer, and "
                 f"{t['with_a_right_sample']} questions keep at least one (the examples every fraction is drawn from)")  # fmt: skip
        if "right_samples_right_first_step" in t:
            note += (f"; {t['right_samples_right_first_step']} of those {t['right_samples']} right samples state the right intermediate "
                     "result (the rest are right for a wrong reason, and the gold filter keeps them)")  # fmt: skip
    cmd = "python benchmarks/data_efficiency.py --seeds 3" + ("" if not tag(task, who) else f" --task {task} --teacher {who}")
    result_file(RESULTS / "data_efficiency.md", task, who).write_text(
        f"# Data efficiency, task {task}, teacher {who} (test accuracy %: mean ± std [95% t-interval of the mean] over n seeds; "
        f"{os.cpu_count()} CPU cores)\n\n`{cmd}`\n\n{table}\n\n{note}\n\n![data efficiency]({png.name})\n"
    )
    print(table)
    print(note)


SUMMARY = RESULTS / "data_efficiency-summary.md"


def goals(runs: list[dict]) -> dict:
    """Issue #14's two goals on one task and teacher, from its main grid's runs, paired by seed (the same subset).
    ``paired``: per fraction, multi-task minus label-only in points (the differences, and (mean, low, high) of the
    95% t-interval). ``below`` / ``above``: the fractions where that interval lies wholly under / over zero (two or
    more seeds). ``half``: label-only's mean at 100%, and the smallest fraction <= 50% whose multi-task mean reaches
    it (with multi-task at that fraction minus label-only at 100%, by seed), None where none does."""
    from rationale_distill.evaluation.stats import mean_interval

    acc = {(r["method"], r["fraction"], r["seed"]): 100 * r["accuracy"] for r in runs}
    fractions = sorted({f for _, f, _ in acc})
    paired = {}
    for f in fractions:
        diffs = [acc[("multi-task", f, s)] - acc[("label-only", f, s)] for m, ff, s in acc
                 if (m, ff) == ("multi-task", f) and ("label-only", f, s) in acc]  # fmt: skip
        if diffs:
            paired[f] = (diffs, mean_interval(diffs))
    found = {"fractions": fractions, "paired": paired,
             "below": [f for f, (d, (_, _, high)) in paired.items() if len(d) > 1 and high < 0],
             "above": [f for f, (d, (_, low, _)) in paired.items() if len(d) > 1 and low > 0], "half": None}  # fmt: skip
    full = [a for (m, f, _), a in acc.items() if (m, f) == ("label-only", 1.0)]
    if full:
        found["label_only_100"] = statistics.mean(full)
        for f in (f for f in fractions if f <= 0.5):
            multi = {s: a for (m, ff, s), a in acc.items() if (m, ff) == ("multi-task", f)}
            if multi and statistics.mean(multi.values()) >= found["label_only_100"]:
                found["half"] = (f, statistics.mean(multi.values()),
                                 [a - acc[("label-only", 1.0, s)] for s, a in multi.items() if ("label-only", 1.0, s) in acc])  # fmt: skip
                break
    return found


def summary() -> str:
    """One table over every task and teacher with a main grid: the paired difference at each fraction and the two
    goals, computed from the committed runs (data_efficiency-summary.md)."""
    lines = ["# Data efficiency: multi-task vs label-only, every task and teacher", "",
             "Computed by `python benchmarks/data_efficiency.py --plot-only` from the committed runs (`data_efficiency*.jsonl`; "
             "the student is Gemma 3 270M + LoRA, 2 epochs, 2 CPU cores). Points of test accuracy on the 100 held-out "
             "questions, multi-task minus label-only on the same subset and seed: mean [95% t-interval] over 3 seeds (n where fewer). Goal 1: "
             "multi-task is not below label-only at any fraction (no interval wholly under zero). Goal 2: multi-task with "
             "at most 50% of the data reaches label-only's mean with 100%.", "",
             "| task | teacher (greedy, test) | " + " | ".join(f"{f * 100:g}%" for f in STEP_FRACTIONS) + " | goal 1: never below "
             "| goal 2: <= 50% reaches label-only at 100% |", "|---|---|" + "---|" * len(STEP_FRACTIONS) + "---|---|"]  # fmt: skip
    for task in TASKS:
        for who in TEACHERS:
            runs = read_runs(result_file(RUNS, task, who))
            if not runs:
                continue
            g = goals(runs)
            pct = lambda f: f"{f * 100:g}%"  # noqa: E731
            cells = " | ".join("-" if f not in g["paired"] else f"{g['paired'][f][1][0]:+.1f}"
                               + (f" [{g['paired'][f][1][1]:+.0f}, {g['paired'][f][1][2]:+.0f}]" if len(g["paired"][f][0]) > 1 else "")
                               + ("" if len(g["paired"][f][0]) == 3 else f" (n={len(g['paired'][f][0])})") for f in STEP_FRACTIONS)  # fmt: skip
            missing = [pct(f) for f in g["fractions"] if f not in g["paired"]]
            one = "no: below at " + ", ".join(map(pct, g["below"])) if g["below"] else "yes"
            if g["above"]:
                one += "; above at " + ", ".join(map(pct, g["above"]))
            if missing:
                one += f" (not paired at {', '.join(missing)})"
            if "label_only_100" not in g:
                two = "label-only at 100% not run"
            elif g["half"] is None:
                best = max(((statistics.mean(m), f) for f in g["fractions"] if f <= 0.5
                            for m in [[r["accuracy"] * 100 for r in runs if (r["method"], r["fraction"]) == ("multi-task", f)]] if m), default=None)  # fmt: skip
                two = f"no: label-only at 100% {g['label_only_100']:.1f}" + (f", multi-task's best at <= 50% {best[0]:.1f} ({pct(best[1])})" if best else "")
            else:
                f, mean, diffs = g["half"]
                two = f"yes: {mean:.1f} at {pct(f)} vs {g['label_only_100']:.1f} ({'/'.join(f'{d:+.0f}' for d in diffs)} by seed)"
            teacher = result_file(TEACHER, task, who)
            accuracy = f" ({100 * json.loads(teacher.read_text())['accuracy']:.0f}%)" if teacher.is_file() else ""
            lines.append(f"| {task} | {who}{accuracy} | {cells} | {one} | {two} |")
    text = "\n".join(lines) + "\n"
    SUMMARY.write_text(text)
    return text


SCHEDULES = ("linear-decay", "cosine-decay")  # a sweep with --schedule S writes its own file: ..._lambda[-task-teacher]-S.jsonl


def sweep_files(task: str, who: str) -> list[tuple[str, Path]]:
    """(schedule, file) of every lambda sweep of a task and teacher that has runs."""
    base = result_file(LAMBDA_RUNS, task, who)
    files = [("constant", base)] + [(name, base.with_name(f"{base.stem}-{name}{base.suffix}")) for name in SCHEDULES]
    return [(name, path) for name, path in files if path.is_file()]


def lambda_table(task: str = "lookup", who: str = "gemma") -> None:
    """Multi-task accuracy by lambda and schedule, beside label-only, its equal-steps control and multi-task at the
    default (lambda 1, constant) from the main runs, on the same subsets and seeds; then each variant minus the
    default, paired by seed (the seed-to-seed spread of the subsets cancels)."""
    swept = [{**r, "schedule": name} for name, path in sweep_files(task, who) for r in read_runs(path)]
    main_runs = read_runs(result_file(RUNS, task, who))
    fractions = sorted({r["fraction"] for r in swept})
    seeds = sorted({r["seed"] for r in swept})
    default = [r for r in main_runs if r["method"] == "multi-task"]
    rows = [(method, [r for r in main_runs if r["method"] == method]) for method in ("label-only", EQUAL_STEPS)]
    rows = [row for row in rows if row[1]] + [("multi-task, lambda = 1, constant (the default)", default)]
    for lam, name in sorted({(r["lambda"], r["schedule"]) for r in swept}):
        label = f"multi-task, lambda = {lam:g}" + ("" if name == "constant" else f", {name}")
        rows.append((label, [r for r in swept if r["lambda"] == lam and r["schedule"] == name]))
    head = " | ".join(f"{f * 100:g}%" for f in fractions)
    lines = [f"| student | {head} |", "|---|" + "---|" * len(fractions)]
    for label, pool in rows:
        cells = [cell([r["accuracy"] for r in pool if r["fraction"] == f and r["seed"] in seeds]) for f in fractions]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Paired by seed (each student minus the default, points; mean [95% t-interval] (each seed)):", "",
              f"| student minus the default | {head} |", "|---|" + "---|" * len(fractions)]  # fmt: skip
    base = {(r["fraction"], r["seed"]): 100 * r["accuracy"] for r in default}
    for label, pool in rows:
        if pool is default:
            continue
        cells = []
        for f in fractions:
            diffs = [100 * r["accuracy"] - base[(f, r["seed"])] for r in pool if r["fraction"] == f and r["seed"] in seeds and (f, r["seed"]) in base]
            cells.append(paired_cell(diffs))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    where = "" if not tag(task, who) else f" --task {task} --teacher {who}"
    cmds = []
    for name, path in sweep_files(task, who):
        runs = read_runs(path)
        lams = ",".join(f"{x:g}" for x in sorted({r["lambda"] for r in runs}))
        cmds.append(f"`python benchmarks/data_efficiency.py{where} --lambdas {lams} --fractions {','.join(f'{f:g}' for f in fractions)} "
                    f"--seeds {len(seeds)}" + ("" if name == "constant" else f" --schedule {name}") + "`")  # fmt: skip
    result_file(LAMBDA_RUNS, task, who).with_suffix(".md").write_text(
        f"# Lambda and schedule sweep, task {task}, teacher {who} (multi-task, test accuracy %: mean ± std [95% t-interval of "
        f"the mean] over seeds {seeds}; {os.cpu_count()} CPU cores)\n\n" + "\n".join(cmds) + f"\n\n{table}\n")
    print(table)


def epochs_file(task: str, who: str, epochs: int) -> Path:
    """The main grid trained for another number of epochs: data_efficiency-arith-program-6epochs.jsonl and the like."""
    path = result_file(RUNS, task, who)
    return path.with_name(f"{path.stem}-{epochs}epochs{path.suffix}")


def epochs_table(task: str, who: str, epochs: int) -> str:
    """Label-only and multi-task trained for ``epochs`` beside the main grid's (EPOCHS) on the same subsets and seeds:
    accuracy, then paired by seed multi-task minus label-only at each length and each method's longer run minus its
    main-grid run (does more training close the gap, or widen it?)."""
    longer = read_runs(epochs_file(task, who, epochs))
    main_runs = read_runs(result_file(RUNS, task, who))
    fractions = sorted({r["fraction"] for r in longer})
    seeds = sorted({r["seed"] for r in longer})
    pools = {(m, n): [r for r in runs if r["method"] == m and r["seed"] in seeds] for n, runs in ((EPOCHS, main_runs), (epochs, longer))
             for m in ("label-only", "multi-task")}  # fmt: skip
    head = " | ".join(f"{f * 100:g}%" for f in fractions)
    lines = [f"| student | {head} |", "|---|" + "---|" * len(fractions)]
    for (m, n), pool in pools.items():
        lines.append(f"| {m}, {n} epochs | " + " | ".join(cell([r["accuracy"] for r in pool if r["fraction"] == f]) for f in fractions) + " |")
    acc = {(m, n, r["fraction"], r["seed"]): 100 * r["accuracy"] for (m, n), pool in pools.items() for r in pool}
    lines += ["", "Paired by seed (points; mean [95% t-interval] (each seed)):", "", f"| difference | {head} |", "|---|" + "---|" * len(fractions)]
    pairs = [(f"multi-task minus label-only, {n} epochs", ("multi-task", n), ("label-only", n)) for n in (EPOCHS, epochs)]
    pairs += [(f"{m}, {epochs} minus {EPOCHS} epochs", (m, epochs), (m, EPOCHS)) for m in ("label-only", "multi-task")]
    for label, a, b in pairs:
        cells = [paired_cell([acc[(*a, f, s)] - acc[(*b, f, s)] for s in seeds if (*a, f, s) in acc and (*b, f, s) in acc]) for f in fractions]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    cmd = (f"python benchmarks/data_efficiency.py --task {task} --teacher {who} --epochs {epochs} --methods label-only,multi-task "
           f"--fractions {','.join(f'{f:g}' for f in fractions)} --seeds {len(seeds)}")  # fmt: skip
    epochs_file(task, who, epochs).with_suffix(".md").write_text(
        f"# Training length, task {task}, teacher {who}: {EPOCHS} vs {epochs} epochs (test accuracy %: mean ± std [95% t-interval "
        f"of the mean] over seeds {seeds}; the same subsets, learning rate and batch; {os.cpu_count()} CPU cores)\n\n`{cmd}`\n\n{table}\n")
    print(table)
    return table


def faithful_table(task: str = "lookup", who: str = "gemma") -> None:
    """multi-task students on the same subsets, built with the answer filters only or with the grounded filter too;
    label-only from the main grid beside them where it ran on the same fractions and seeds."""
    path = result_file(FAITHFUL_RUNS, task, who)
    runs = read_runs(path)
    fractions = sorted({r["fraction"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    arms = (("answer", "multi-task, answer filters (parsed, agrees, rationale-length, dedup)"), ("grounded", "multi-task, + grounded"))
    lines = ["| student | " + " | ".join(f"{f * 100:g}%" for f in fractions) + " | examples kept (mean) |", "|---|" + "---|" * (len(fractions) + 1)]
    label_only = [r for r in read_runs(result_file(RUNS, task, who)) if r["method"] == "label-only" and r["seed"] in seeds and r["fraction"] in fractions]
    pools = [(name, [r for r in runs if r.get("arm") == arm]) for arm, name in arms]
    for name, pool in ([("label-only (the main grid, same fractions and seeds)", label_only)] if label_only else []) + pools:
        cells = [cell([r["accuracy"] for r in pool if r["fraction"] == f]) for f in fractions]
        kept = [r["examples"] for r in pool]
        lines.append(f"| {name} | " + " | ".join(cells) + (f" | {statistics.mean(kept):.1f} |" if kept else " | - |"))
    dropped = sum(r.get("dropped", {}).get("grounded", 0) for r in runs)
    table = "\n".join(lines)
    where = "" if not tag(task, who) else f" --task {task} --teacher {who}"
    cmd = f"python benchmarks/data_efficiency.py --faithful{where} --fractions {','.join(f'{f:g}' for f in fractions)} --seeds {len(seeds)}"
    path.with_suffix(".md").write_text(
        f"# Faithful rationales (multi-task, test accuracy % on the 100 held-out questions: mean ± std [95% t-interval of "
        f"the mean] over seeds {seeds}; {os.cpu_count()} CPU cores)\n\n`{cmd}`\n\n{table}\n\nThe grounded filter dropped "
        f"{dropped} samples over these runs (right answer, but a rationale about someone else or not from the question).\n")
    print(table)


def run_args(cell: dict) -> dict:
    """one_run's arguments from a grid cell (JSON-safe: paths as strings; ``variant``, the lambda or filter arm, is the caller's)."""
    return {**{k: v for k, v in cell.items() if k != "variant"}, "records": Path(cell["records"]), "work": Path(cell["work"])}


def cell_command(cell: dict, out: Path) -> list[str]:
    """This script, asked to make one run of the grid and write its result to ``out``."""
    return [sys.executable, str(Path(__file__).resolve()), "--cell", json.dumps(cell), "--cell-out", str(out)]


def run_cells(cells: list[dict], jobs: int, work: Path, threads: int, command=cell_command):
    """Each cell (one_run's arguments) in a child process, ``jobs`` at a time with ``threads`` torch threads each;
    yields (cell, result, error) as each ends: the result dict, or None and the last lines of the child's log (in
    WORK/logs) when it failed."""
    import subprocess
    import time

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running = list(cells), {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                cell = pending.pop(0)
                name = hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:12]
                out, log = logs / f"{name}.json", logs / f"{name}.log"
                out.unlink(missing_ok=True)
                with log.open("w") as fh:
                    running[subprocess.Popen(command(cell, out), stdout=fh, stderr=subprocess.STDOUT, env=env)] = (cell, out, log)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                cell, out, log = running.pop(proc)
                if proc.returncode == 0 and out.is_file():
                    yield cell, json.loads(out.read_text()), None
                else:
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    yield cell, None, f"exit {proc.returncode}, {log}: " + " / ".join(tail)
    finally:  # an interrupted grid leaves no orphan runs behind
        for proc in running:
            proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rdistill-data-efficiency"))
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--lambdas", help="comma-separated rationale weights: run the lambda sweep (multi-task only)")
    parser.add_argument("--fractions", help="comma-separated data fractions (default: 0.125,0.25,0.5,1 on lookup, 0.05,0.125,0.25,0.5,1 on the step tasks)")
    parser.add_argument("--task", choices=sorted(TASKS), default="lookup")
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="gemma")
    parser.add_argument("--schedule", choices=("constant", "linear-decay", "cosine-decay"), default="constant",
                        help="with --lambdas: the rationale-weight schedule of the sweep")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"train the main grid's students for this many epochs instead of {EPOCHS}, into a file of its own "
                             "(data_efficiency-TASK-TEACHER-Nepochs.jsonl), tabled beside the main grid")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process with cores/jobs torch threads "
                                                            "(each holds a student in memory; logs in WORK/logs)")  # fmt: skip
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: one run of the grid (one_run's arguments, JSON)
    parser.add_argument("--cell-out", help=argparse.SUPPRESS)
    parser.add_argument("--faithful", action="store_true", help="multi-task with the grounded filter, against the main multi-task runs")
    parser.add_argument("--methods", help=f"comma-separated: run only these of the main grid's methods ({', '.join([*METHODS, EQUAL_STEPS])}), "
                                          "e.g. to spend CPU where an interval is widest first")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cell:  # a child of --jobs: one run, its result written whole (tmp, then rename)
        result = one_run(**run_args(json.loads(args.cell)))
        out = Path(args.cell_out)
        out.with_suffix(".tmp").write_text(json.dumps(result))
        out.with_suffix(".tmp").replace(out)
        return
    if args.epochs != EPOCHS and (args.lambdas or args.faithful):
        parser.error("--epochs: the main grid's methods only (not with --lambdas or --faithful)")
    from tqdm.auto import tqdm

    RESULTS.mkdir(exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    task, who = args.task, args.teacher
    teacher_file = result_file(TEACHER, task, who)
    if args.plot_only:  # tables and plot again from the committed results
        plot(json.loads(teacher_file.read_text()) if teacher_file.is_file() else teacher_accuracy(teacher_test_records(work, task, who), teacher_file), task, who)
        if sweep_files(task, who):
            lambda_table(task, who)
        if result_file(FAITHFUL_RUNS, task, who).is_file():
            faithful_table(task, who)
        base = result_file(RUNS, task, who)
        for longer in sorted(base.parent.glob(f"{base.stem}-*epochs.jsonl")):
            found = re.fullmatch(rf"{re.escape(base.stem)}-(\d+)epochs", longer.stem)  # not another task's file
            if found:
                epochs_table(task, who, int(found.group(1)))
        print(summary())
        return
    records, test_records = teacher_records(work, task, who)
    if not teacher_file.is_file():
        teacher_accuracy(test_records, teacher_file, records, task)
    test_data = generation(work, task, who, test=True)[0].data
    default = FRACTIONS if task == "lookup" else STEP_FRACTIONS
    fractions = [float(x) for x in args.fractions.split(",")] if args.fractions else list(default)
    max_length = 96 if task == "lookup" else 128
    # One grid either way: the methods (lambda None: the default weight), or multi-task at each swept lambda.
    variant_filters = {}
    if args.faithful:  # both arms in this run, interleaved: the same code, subsets and seeds
        variants, path = [("multi-task", "answer"), ("multi-task", "grounded")], result_file(FAITHFUL_RUNS, task, who)
        variant_filters = {"answer": ANSWER_FILTERS, "grounded": ANSWER_FILTERS[:2] + ["grounded"] + ANSWER_FILTERS[2:]}
        report = lambda: faithful_table(task, who)  # noqa: E731
    elif args.lambdas:
        path = result_file(LAMBDA_RUNS, task, who)
        if args.schedule != "constant":
            path = path.with_name(f"{path.stem}-{args.schedule}{path.suffix}")
        variants = [("multi-task", float(x)) for x in args.lambdas.split(",")]
        report = lambda: lambda_table(task, who)  # noqa: E731
    else:
        chosen = [m.strip() for m in args.methods.split(",")] if args.methods else [*METHODS, EQUAL_STEPS]
        unknown = set(chosen) - {*METHODS, EQUAL_STEPS}
        if unknown:
            parser.error(f"--methods: unknown {sorted(unknown)}; choose from {[*METHODS, EQUAL_STEPS]}")
        variants, path = [(m, None) for m in chosen], result_file(RUNS, task, who)
        report = lambda: (plot(teacher_accuracy(test_records, teacher_file, records, task), task, who), summary())  # noqa: E731
        if args.epochs != EPOCHS:
            path = epochs_file(task, who, args.epochs)
            report = lambda: epochs_table(task, who, args.epochs)  # noqa: E731
    done = {(r["method"], r.get("lambda", r.get("arm")), r["fraction"], r["seed"]) for r in read_runs(path, repair=True)}
    plan = [(seed, fraction, method, lam) for seed in range(args.seeds) for fraction in fractions for method, lam in variants
            if (method, lam, fraction, seed) not in done]  # fmt: skip
    print(f"{len(plan)} runs to make ({len(done)} done in {path.name})", flush=True)
    cells = []
    for seed, fraction, method, lam in plan:
        filters = variant_filters.get(lam)
        cells.append({"variant": lam, "method": method, "fraction": fraction, "seed": seed, "records": str(records), "test_data": test_data,
                      "work": str(work), "rationale_weight": 1.0 if lam is None or filters else lam, "filters": filters,
                      "schedule": args.schedule if args.lambdas else "constant", "max_length": max_length, "epochs": args.epochs})  # fmt: skip
    if args.jobs > 1:
        finished = run_cells(cells, args.jobs, work, threads=max(1, (os.cpu_count() or 1) // args.jobs))
    else:  # in this process, one after another
        finished = ((c, one_run(**run_args(c)), None) for c in cells)
    grid = tqdm(total=len(cells), desc=f"data efficiency ({task}, {who})", unit="run", position=0)
    left = {seed: sum(c["seed"] == seed for c in cells) for seed in {c["seed"] for c in cells}}
    failed = []
    for cell, result, error in finished:
        grid.update()
        grid.set_postfix_str(f"{cell['method']}, {cell['fraction']:g}, seed {cell['seed']}")
        lam = cell["variant"]
        if error:
            failed.append(f"{cell['method']}, {cell['fraction']:g}, seed {cell['seed']}: {error}")
            grid.write(f"failed: {failed[-1]}")
        else:
            if variant_filters.get(lam):
                result["arm"] = lam
            elif lam is not None:
                result["lambda"] = lam
            grid.write(json.dumps({k: v for k, v in result.items() if k != "predictions"}))
            with path.open("a") as fh:
                fh.write(json.dumps(result) + "\n")
        left[cell["seed"]] -= 1
        if not left[cell["seed"]]:  # a seed's last run: tables and plot so far
            report()
    grid.close()
    if not plan:
        report()
    if failed:
        raise SystemExit(f"{len(failed)} of {len(plan)} runs failed (the rest are saved; a re-run makes only these):\n" + "\n".join(failed))

if __name__ == "__main__":
    main()
