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
    python benchmarks/data_efficiency.py --rationales-from program --fractions 0.125,0.25 --seeds 3
                                                            # the Gemma teacher's examples, the program's rationales for them
    python benchmarks/data_efficiency.py --task twohop --teacher program --recheck multi-task,0.25,0
                                                            # make one committed run again: the same accuracy and answers?
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
single-task (rationale and answer in one target) and multi-task (ours: [label] and [rationale] rows), on 5%,
12.5%, 25%, 50% and 100% of the examples that kept a correct rationale (the same subset for every method at a given
seed), same hyper-parameters, then scored on the 100 held-out questions. Each finished run is appended to
benchmarks/results/data_efficiency.jsonl (with its wall time and torch threads) and skipped on a re-run, so the
experiment resumes after an interruption; a progress bar counts the grid's runs still to make.
The lambda sweep trains multi-task students with other weights on the rationale loss (L = L_label + lambda *
L_rationale; lambda = 0 keeps the [label]/[rationale] rows and their prefixes but learns nothing from rationales, a
control for the prefixes and the doubled row count) into data_efficiency_lambda.{jsonl,md}. --faithful trains
multi-task students on the same subsets built with the `grounded` filter too (a rationale must state facts from the
question and name whom it asks about; the answer filter alone keeps right answers for the wrong reason) into
data_efficiency_faithful.{jsonl,md}. --rationales-from TEACHER trains multi-task students on the same examples,
answers and rows with the other teacher's rationale for each (data_efficiency_rationales-from-TEACHER.{jsonl,md}):
what the rationales' correctness is worth. --recheck METHOD,FRACTION,SEED makes one committed run again from scratch
and says whether it matches (data_efficiency_rechecks.jsonl keeps every verdict).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tables modules beside this script
from data_efficiency_studies import epochs_file, epochs_table, faithful_table, lambda_table, swap_file, swap_table, sweep_files  # noqa: E402
from data_efficiency_tables import (ANSWER_FILTERS, EPOCHS, EQUAL_STEPS, FAITHFUL_RUNS, FRACTIONS, LAMBDA_RUNS, RECHECKS,  # noqa: E402
                                   RESULTS, METHODS, ROOT, RUNS, TASKS, TEACHER, TEACHERS, plot, read_runs, result_file, summary,
                                   tag, teacher_accuracy)  # fmt: skip


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


def swap_rationales(sub: Path, other: Path) -> Path:
    """``sub``'s records with every right sample's rationale replaced by ``other``'s (another teacher's records on the
    same questions: its first right sample's rationale), written beside it as ...-swapped.jsonl. The examples, answers
    and row count stay; only what the rationale rows say changes (--rationales-from)."""
    from rationale_distill.records import read_records, write_jsonl

    theirs = {r.id: next((s.rationale for s in r.samples if s.ok and s.answer == r.label), None) for r in read_records(other)}
    records = read_records(sub)
    for r in records:
        if not theirs.get(r.id):
            raise SystemExit(f"--rationales-from: {other} has no right rationale for {r.id}; pick a teacher right on every question")
        for s in r.samples:
            if s.ok and s.answer == r.label:
                s.rationale = theirs[r.id]
    path = sub.with_name(f"{sub.stem}-swapped.jsonl")
    write_jsonl(path, records)
    return path


BATCH = 8


def one_run(method: str, fraction: float, seed: int, records: Path, test_data: str, work: Path, rationale_weight: float = 1.0,
            filters: list[str] | None = None, schedule: str = "constant", max_length: int = 96, epochs: int = EPOCHS,
            rationales_from: str | None = None) -> dict:  # fmt: skip
    import math

    import rationale_distill as rd

    started = time.perf_counter()
    sub = subset(records, fraction, seed, work)
    if rationales_from:  # the same examples and answers, another teacher's rationale for each
        sub = swap_rationales(sub, Path(rationales_from))
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


def recheck_spec(spec: str) -> tuple[str, float, int]:
    """--recheck's METHOD,FRACTION,SEED."""
    try:
        method, fraction, seed = (x.strip() for x in spec.rsplit(",", 2))
        return method, float(fraction), int(seed)
    except ValueError:
        raise SystemExit(f"--recheck {spec!r}: give METHOD,FRACTION,SEED, e.g. --recheck multi-task,0.25,0") from None


def compare_runs(committed: dict, again: dict) -> tuple[str, bool]:
    """One line saying whether a run made again matches the committed one (accuracy, and each question's answer
    where the committed run kept them), and whether it does."""
    name = f"{committed['method']}, {committed['fraction'] * 100:g}%, seed {committed['seed']}"
    old, new = 100 * committed["accuracy"], 100 * again["accuracy"]
    same = old == new
    line = f"{name}: committed {old:.1f}%, made again {new:.1f}%: " + ("the same" if same else f"differs by {new - old:+.1f} points")
    if committed.get("predictions") is not None:
        agree = sum(a == b for a, b in zip(committed["predictions"], again["predictions"]))
        same &= agree == len(committed["predictions"]) == len(again["predictions"])
        line += f" ({agree} of {len(committed['predictions'])} answers the same)"
    else:
        line += " (the committed run kept no per-question answers to compare)"
    return line, same


def recheck(committed: dict, cell: dict, task: str, who: str) -> int:
    """Make ``cell`` (a committed run's arguments, in a fresh work folder) again, print and keep the verdict
    (RECHECKS); 0 if it matches the committed run, 1 if not."""
    Path(cell["work"]).mkdir(parents=True, exist_ok=True)
    result = one_run(**run_args(cell))
    line, same = compare_runs(committed, result)
    print(line)
    with RECHECKS.open("a") as fh:  # every recheck is kept, whatever it found
        fh.write(json.dumps({"task": task, "teacher": who, "epochs": cell["epochs"], "method": cell["method"], "fraction": cell["fraction"],
                             "seed": cell["seed"], "committed": committed["accuracy"], "again": result["accuracy"], "same": same,
                             "verdict": line, "threads": result["threads"], "wall_s": result["wall_s"],
                             "date": time.strftime("%Y-%m-%d")}) + "\n")  # fmt: skip
    return 0 if same else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rdistill-data-efficiency"))
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--lambdas", help="comma-separated rationale weights: run the lambda sweep (multi-task only)")
    parser.add_argument("--fractions", help="comma-separated data fractions (default: 0.05,0.125,0.25,0.5,1)")
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
    parser.add_argument("--recheck", metavar="METHOD,FRACTION,SEED",
                        help="make one committed run of the grid (with --task, --teacher, --epochs) again in a folder of its own and "
                             "say whether its accuracy and answers match the committed ones (exit 1 if not); each verdict is "
                             "appended to data_efficiency_rechecks.jsonl")  # fmt: skip
    parser.add_argument("--rationales-from", choices=sorted(TEACHERS),
                        help="label-only, multi-task, and multi-task on the same examples, answers and rows with each rationale "
                             "replaced by this teacher's (right on every question), all on the same subsets: what the "
                             "rationales' correctness is worth")  # fmt: skip
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
    if args.rationales_from and (args.lambdas or args.faithful or args.recheck or args.epochs != EPOCHS or args.rationales_from == args.teacher):
        parser.error("--rationales-from: another teacher than --teacher, alone (not with --lambdas, --faithful, --recheck or --epochs)")
    if args.recheck:  # checked before any teacher call: the run must be in the results file
        if args.lambdas or args.faithful:
            parser.error("--recheck: the main grid's runs only (not with --lambdas or --faithful)")
        method, fraction, seed = recheck_spec(args.recheck)
        runs_file = epochs_file(args.task, args.teacher, args.epochs) if args.epochs != EPOCHS else result_file(RUNS, args.task, args.teacher)
        committed = [r for r in read_runs(runs_file) if (r["method"], r["fraction"], r["seed"]) == (method, fraction, seed)]
        if not committed:
            raise SystemExit(f"--recheck: {runs_file} has no run {method}, {fraction:g}, seed {seed}; pick one of its lines")
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
        for other in TEACHERS:
            if swap_file(task, who, other).is_file():
                swap_table(task, who, other)
        base = result_file(RUNS, task, who)
        for longer in sorted(base.parent.glob(f"{base.stem}-*epochs.jsonl")):
            found = re.fullmatch(rf"{re.escape(base.stem)}-(\d+)epochs", longer.stem)  # not another task's file
            if found:
                epochs_table(task, who, int(found.group(1)))
        print(summary())
        return
    records, test_records = teacher_records(work, task, who)
    teacher = teacher_accuracy(test_records, teacher_file, records, task)  # once: the records do not change in a run
    test_data = generation(work, task, who, test=True)[0].data
    fractions = [float(x) for x in args.fractions.split(",")] if args.fractions else list(FRACTIONS)
    max_length = 96 if task == "lookup" else 128
    # One grid either way: the methods (lambda None: the default weight), or multi-task at each swept lambda.
    variant_filters = {}
    if args.faithful:  # both arms in this run, interleaved: the same code, subsets and seeds
        variants, path = [("multi-task", "answer"), ("multi-task", "grounded")], result_file(FAITHFUL_RUNS, task, who)
        variant_filters = {"answer": ANSWER_FILTERS, "grounded": ANSWER_FILTERS[:2] + ["grounded"] + ANSWER_FILTERS[2:]}
        report = lambda: faithful_table(task, who)  # noqa: E731
    elif args.rationales_from:  # all three arms in this run, on the same subsets: label-only, multi-task, swapped
        variants, path = [("label-only", None), ("multi-task", None), ("multi-task", "swapped")], swap_file(task, who, args.rationales_from)
        swapped_in = str(teacher_records(work, task, args.rationales_from)[0])
        report = lambda: swap_table(task, who, args.rationales_from)  # noqa: E731
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
        report = lambda: (plot(teacher, task, who), summary())  # noqa: E731
        if args.epochs != EPOCHS:
            path = epochs_file(task, who, args.epochs)
            report = lambda: epochs_table(task, who, args.epochs)  # noqa: E731

    def grid_cell(method: str, lam, fraction: float, seed: int, into: Path = work) -> dict:
        filters = variant_filters.get(lam)
        return {"variant": lam, "method": method, "fraction": fraction, "seed": seed, "records": str(records), "test_data": test_data,
                "work": str(into), "rationale_weight": lam if args.lambdas else 1.0, "filters": filters,
                "schedule": args.schedule if args.lambdas else "constant", "max_length": max_length, "epochs": args.epochs,
                **({"rationales_from": swapped_in} if lam == "swapped" else {})}  # fmt: skip

    if args.recheck:  # a folder of its own: the subset, dataset and student are all made anew
        shutil.rmtree(work / "recheck", ignore_errors=True)
        raise SystemExit(recheck(committed[-1], grid_cell(method, None, fraction, seed, work / "recheck"), task, who))
    done = {(r["method"], r.get("lambda", r.get("arm")), r["fraction"], r["seed"]) for r in read_runs(path, repair=True)}
    plan = [(seed, fraction, method, lam) for seed in range(args.seeds) for fraction in fractions for method, lam in variants
            if (method, lam, fraction, seed) not in done]  # fmt: skip
    print(f"{len(plan)} runs to make ({len(done)} done in {path.name})", flush=True)
    cells = [grid_cell(method, lam, fraction, seed) for seed, fraction, method, lam in plan]
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
            if lam == "swapped":
                result["arm"], result["rationales_from"] = lam, args.rationales_from
            elif variant_filters.get(lam):
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
