"""The data-efficiency study's results: where each grid's runs live, and the tables, plots and summary made from
them (``python benchmarks/data_efficiency.py --plot-only`` redraws them all without the work folder). The runs
themselves are made by data_efficiency.py."""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "data_efficiency.jsonl"
LAMBDA_RUNS = RESULTS / "data_efficiency_lambda.jsonl"
TEACHER = RESULTS / "data_efficiency_teacher.json"
FAITHFUL_RUNS = RESULTS / "data_efficiency_faithful.jsonl"
RECHECKS = RESULTS / "data_efficiency_rechecks.jsonl"  # --recheck's verdicts: committed runs made again
ANSWER_FILTERS = ["parsed", "agrees", "rationale-length", "dedup"]  # the build's defaults in rationale mode
FRACTIONS = (0.05, 0.125, 0.25, 0.5, 1.0)  # every task: five fractions from 5% to 100%
METHODS = {"label-only": "label-only", "single-task": "single-task", "multi-task": "rationale"}
EQUAL_STEPS = "label-only (equal steps)"  # label-only for as many optimiser steps as multi-task
TASKS = {"lookup": "lookup-cot", "twohop": "twohop-cot", "arith": "arith-cot"}  # task -> the teacher's CoT prompt
TEACHERS = {"gemma": "local/gemma-3-270m", "program": "step-teacher"}


def tag(task: str, teacher: str) -> str:
    """'' for the demo's task and teacher (the original file names), else '-twohop-program' and the like."""
    return "" if (task, teacher) == ("lookup", "gemma") else f"-{task}-{teacher}"


def result_file(path: Path, task: str, teacher: str) -> Path:
    return path.with_name(path.stem + tag(task, teacher) + path.suffix)


EPOCHS = 2  # the main grid's training epochs (--epochs N writes a file of its own)


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


def demo_rows(task: str, split: str) -> list[dict]:
    """A shipped task's questions (rationale_distill/demo/TASK_SPLIT.jsonl), in file order."""
    return [json.loads(x) for x in (ROOT / "rationale_distill" / "demo" / f"{task}_{split}.jsonl").read_text().splitlines()]


def first_step(task: str, rationale: str | None) -> str | None:
    """A task's intermediate result as a rationale states it: the person whose thing it is (look-up), the thing the
    person has (two-hop), the product (arithmetic); None where the rationale states none."""
    pattern = {"lookup": r"(\w+) has an? ", "twohop": r"has an? (\w+)\."}.get(task, r"= (\d+)")
    found = re.search(pattern, rationale or "")
    return found.group(1) if found else None


def reference_rationale(task: str, row: dict) -> str:
    """The gold rationale of a shipped question: the step tasks ship one; the look-up task's is the clause of the
    person asked about ("Eva has a blue kite.")."""
    if task != "lookup":
        return row["reference_rationale"]
    person, thing = re.search(r"What color is (\w+)'s (\w+)\?", row["question"]).groups()
    return f"{person} has a {row['answer']} {thing}."


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
    on a task's training questions: the gold filter keeps an answer, not the reasoning that reached it."""
    rows = {r["id"]: r for r in demo_rows(task, "train")}
    right = [(r, s) for r in records for s in r.samples if s.ok and s.answer == r.label]
    return len(right), sum(first_step(task, s.rationale) == first_step(task, reference_rationale(task, rows[r.id])) for r, s in right)


def error_table(runs: list[dict], task: str) -> str:
    """Wrong answers by kind, per method and fraction, over the runs that kept their per-question predictions."""
    if task == "lookup":
        return ""
    test = demo_rows(task, "test")
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
            step = "name the person asked about" if task == "lookup" else "state the right intermediate result"
            note += (f"; {t['right_samples_right_first_step']} of those {t['right_samples']} right samples {step} "
                     "(the rest are right for a wrong reason, and the gold filter keeps them)")  # fmt: skip
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
    it (with multi-task at that fraction minus label-only at 100%, by seed), None where none does; ``best``:
    multi-task's highest mean at <= 50% and its fraction (None without such runs)."""
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
    multi = {f: {s: a for (m, ff, s), a in acc.items() if (m, ff) == ("multi-task", f)} for f in fractions if f <= 0.5}
    means = {f: statistics.mean(by_seed.values()) for f, by_seed in multi.items() if by_seed}
    found["best"] = max(((mean, f) for f, mean in means.items()), default=None)
    full = [a for (m, f, _), a in acc.items() if (m, f) == ("label-only", 1.0)]
    if full:
        found["label_only_100"] = statistics.mean(full)
        f = next((f for f in sorted(means) if means[f] >= found["label_only_100"]), None)
        if f is not None:
            found["half"] = (f, means[f], [a - acc[("label-only", 1.0, s)] for s, a in multi[f].items() if ("label-only", 1.0, s) in acc])
    return found


def summary() -> str:
    """One table over every task and teacher with a main grid: the paired difference at each fraction and the two
    goals, computed from the committed runs (data_efficiency-summary.md)."""
    lines = ["# Data efficiency: multi-task vs label-only, every task and teacher", "",
             "Computed by `python benchmarks/data_efficiency.py --plot-only` from the committed runs (`data_efficiency*.jsonl`; "
             "the student is Gemma 3 270M + LoRA, 2 epochs, 2 CPU cores). Points of test accuracy on the 100 held-out "
             "questions, multi-task minus label-only on the same subset and seed: mean [95% t-interval] (each seed). Goal 1: "
             "multi-task is not below label-only at any fraction (no interval wholly under zero). Goal 2: multi-task with "
             "at most 50% of the data reaches label-only's mean with 100%.", "",
             "| task | teacher (greedy, test) | " + " | ".join(f"{f * 100:g}%" for f in FRACTIONS) + " | goal 1: never below "
             "| goal 2: <= 50% reaches label-only at 100% |", "|---|---|" + "---|" * len(FRACTIONS) + "---|---|"]  # fmt: skip
    for task in TASKS:
        for who in TEACHERS:
            runs = read_runs(result_file(RUNS, task, who))
            if not runs:
                continue
            g = goals(runs)
            pct = lambda f: f"{f * 100:g}%"  # noqa: E731
            cells = " | ".join(paired_cell(g["paired"][f][0]) if f in g["paired"] else "-" for f in FRACTIONS)
            missing = [pct(f) for f in g["fractions"] if f not in g["paired"]]
            one = "no: below at " + ", ".join(map(pct, g["below"])) if g["below"] else "yes"
            if g["above"]:
                one += "; above at " + ", ".join(map(pct, g["above"]))
            if missing:
                one += f" (not paired at {', '.join(missing)})"
            if "label_only_100" not in g:
                two = "label-only at 100% not run"
            elif g["half"] is None:
                best = g["best"]
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
