"""The data-efficiency study's side studies, one table each beside the main grid on the same subsets and seeds: the
lambda and schedule sweep, training length (--epochs), the grounded filter (--faithful) and whose rationales
(--rationales-from). The main grid's tables, plot and summary are in data_efficiency_tables.py; the runs are made
by data_efficiency.py."""

from __future__ import annotations

import os
import shlex
import statistics
from pathlib import Path

from data_efficiency_tables import (EPOCHS, EQUAL_STEPS, FAITHFUL_RUNS, LAMBDA_RUNS, RESULTS, RUNS, cell, paired_cell,
                                    read_runs, result_file, tag)  # fmt: skip

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


def paired_rows(acc: dict, pairs: list, fractions: list[float], seeds: list[int]) -> list[str]:
    """One table row per (label, a, b): at each fraction, a minus b paired by seed over the seeds both have, where
    ``acc`` maps (*key, fraction, seed) to accuracy in points and a, b are key tuples."""
    return [f"| {label} | " + " | ".join(paired_cell([acc[(*a, f, s)] - acc[(*b, f, s)] for s in seeds if (*a, f, s) in acc and (*b, f, s) in acc])
                                        for f in fractions) + " |" for label, a, b in pairs]  # fmt: skip


def epochs_file(task: str, who: str, epochs: int) -> Path:
    """The main grid trained for another number of epochs: data_efficiency-arith-program-6epochs.jsonl and the like."""
    path = result_file(RUNS, task, who)
    return path.with_name(f"{path.stem}-{epochs}epochs{path.suffix}")


def epochs_table(task: str, who: str, epochs: int) -> str:
    """The main grid's methods trained for ``epochs`` beside the same methods at EPOCHS on the same subsets and seeds:
    accuracy, then paired by seed multi-task minus each other method at each length and each method's longer run minus
    its main-grid run (does more training close the gap, or widen it?). Label-only and multi-task always have rows;
    another method (the equal-steps control) has rows where the longer file holds it."""
    longer = read_runs(epochs_file(task, who, epochs))
    main_runs = read_runs(result_file(RUNS, task, who))
    fractions = sorted({r["fraction"] for r in longer})
    seeds = sorted({r["seed"] for r in longer})
    methods = ["label-only", "multi-task"] + [m for m in (EQUAL_STEPS, "single-task") if any(r["method"] == m for r in longer)]
    pools = {(m, n): [r for r in runs if r["method"] == m and r["seed"] in seeds] for m in methods
             for n, runs in ((EPOCHS, main_runs), (epochs, longer))}  # fmt: skip
    pools = {key: pool for key, pool in pools.items() if pool or key[0] in ("label-only", "multi-task")}
    head = " | ".join(f"{f * 100:g}%" for f in fractions)
    lines = [f"| student | {head} |", "|---|" + "---|" * len(fractions)]
    for (m, n), pool in pools.items():
        lines.append(f"| {m}, {n} epochs | " + " | ".join(cell([r["accuracy"] for r in pool if r["fraction"] == f]) for f in fractions) + " |")
    acc = {(m, n, r["fraction"], r["seed"]): 100 * r["accuracy"] for (m, n), pool in pools.items() for r in pool}
    lines += ["", "Paired by seed (points; mean [95% t-interval] (each seed)):", "", f"| difference | {head} |", "|---|" + "---|" * len(fractions)]
    pairs = [(f"multi-task minus {m}, {n} epochs", ("multi-task", n), (m, n)) for m in methods if m != "multi-task"
             for n in (EPOCHS, epochs) if (m, n) in pools]  # fmt: skip
    pairs += [(f"{m}, {epochs} minus {EPOCHS} epochs", (m, epochs), (m, EPOCHS)) for m in methods if (m, EPOCHS) in pools and (m, epochs) in pools]
    lines += paired_rows(acc, pairs, fractions, seeds)
    table = "\n".join(lines)
    ran = [m for m in methods if any(r["method"] == m for r in longer)]
    cmd = (f"python benchmarks/data_efficiency.py --task {task} --teacher {who} --epochs {epochs} --methods {shlex.quote(','.join(ran))} "
           f"--fractions {','.join(f'{f:g}' for f in fractions)} --seeds {len(seeds)}")  # fmt: skip
    epochs_file(task, who, epochs).with_suffix(".md").write_text(
        f"# Training length, task {task}, teacher {who}: {EPOCHS} vs {epochs} epochs (test accuracy %: mean ± std [95% t-interval "
        f"of the mean] over seeds {seeds}; the same subsets, learning rate and batch; {os.cpu_count()} CPU cores)\n\n`{cmd}`\n\n{table}\n")
    print(table)
    return table


def swap_file(task: str, who: str, other: str) -> Path:
    """A --rationales-from run's three arms on ``who``'s examples (label-only, multi-task, multi-task with ``other``'s
    rationales): data_efficiency_rationales-from-program.jsonl (the look-up task with the Gemma teacher),
    data_efficiency_rationales-from-program-twohop-gemma.jsonl, ..."""
    return result_file(RESULTS / f"data_efficiency_rationales-from-{other}.jsonl", task, who)


def swap_table(task: str, who: str, other: str) -> str:
    """Label-only, multi-task on ``who``'s own rationales and multi-task on the same examples and answers with
    ``other``'s rationales, all made by one --rationales-from run on the same subsets and seeds, and the differences
    paired by seed: what the rationales' correctness is worth, everything else held."""
    runs = read_runs(swap_file(task, who, other))
    fractions = sorted({r["fraction"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    pools = {"label-only": [r for r in runs if r["method"] == "label-only"],
             f"multi-task, {who}'s own rationales": [r for r in runs if r["method"] == "multi-task" and r.get("arm") != "swapped"],
             f"multi-task, {other}'s rationales for the same examples": [r for r in runs if r.get("arm") == "swapped"]}  # fmt: skip
    acc = {(name, r["fraction"], r["seed"]): 100 * r["accuracy"] for name, pool in pools.items() for r in pool}
    head = " | ".join(f"{f * 100:g}%" for f in fractions)
    lines = [f"| student | {head} |", "|---|" + "---|" * len(fractions)]
    for name, pool in pools.items():
        lines.append(f"| {name} | " + " | ".join(cell([r["accuracy"] for r in pool if r["fraction"] == f]) for f in fractions) + " |")
    kept = [f"{round(statistics.mean(r['examples'] for r in runs if r['fraction'] == f), 1):g}" for f in fractions]
    lines.append("| examples (mean over seeds) | " + " | ".join(kept) + " |")
    names = list(pools)
    lines += ["", "Paired by seed (points; mean [95% t-interval] (each seed)):", "", f"| difference | {head} |", "|---|" + "---|" * len(fractions)]
    pairs = [(f"{a} minus {b}", (a,), (b,)) for a, b in ((names[2], names[1]), (names[2], names[0]), (names[1], names[0]))]
    lines += paired_rows(acc, pairs, fractions, seeds)
    table = "\n".join(lines)
    where = "" if not tag(task, who) else f" --task {task} --teacher {who}"
    cmd = f"python benchmarks/data_efficiency.py{where} --rationales-from {other} --fractions {','.join(f'{f:g}' for f in fractions)} --seeds {len(seeds)}"
    swap_file(task, who, other).with_suffix(".md").write_text(
        f"# Whose rationales: task {task}, {who}'s examples and answers, multi-task with {who}'s rationales or {other}'s "
        f"(test accuracy % on the held-out questions: mean ± std [95% t-interval of the mean] over seeds {seeds}; the three "
        f"arms made in one run on the same subsets, rows and settings; {os.cpu_count()} CPU cores)\n\n`{cmd}`\n\n{table}\n")
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
