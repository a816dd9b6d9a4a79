"""Intervals and significance in the report, checked against hand-computed values."""

import json
import math
import statistics
import sys

import pytest

from rationale_distill.evaluation.stats import describe, mcnemar_exact, mean_interval, paired, wilson


def test_wilson_matches_hand_computed_intervals():
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson(0, 10)  # the normal approximation would give [0, 0]; Wilson knows 10 rows prove little
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4) and wilson(0, 0) is None
    assert wilson(90, 100)[1] - wilson(90, 100)[0] < wilson(9, 10)[1] - wilson(9, 10)[0]  # more rows, narrower


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 13) == pytest.approx(2 * 0.5**13)
    assert mcnemar_exact(3, 7) == pytest.approx(2 * (1 + 10 + 45 + 120) / 1024)
    assert mcnemar_exact(7, 3) == mcnemar_exact(3, 7) and mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0


def test_paired_difference_interval_and_verdict():
    same = paired([True, False] * 20, [True, False] * 20)
    assert same["difference"] == 0 and same["ci95"] == [0, 0] and same["p_mcnemar"] == 1.0 and not same["significant"]
    assert "not significant" in describe(same)
    # The student wins 4 of 6 discordant rows out of 40: a difference of +5 points that 40 rows cannot confirm.
    student = [True] * 30 + [True] * 4 + [False] * 2 + [False] * 4
    teacher = [True] * 30 + [False] * 4 + [True] * 2 + [False] * 4
    close = paired(student, teacher)
    assert close["difference"] == pytest.approx(0.05) and close["ci95"][0] < 0 < close["ci95"][1]
    assert close["student_only_right"] == 4 and close["teacher_only_right"] == 2 and not close["significant"]
    assert close == paired(student, teacher)  # seeded: the report is reproducible
    far = paired([True] * 40, [False] * 20 + [True] * 20)
    assert far["significant"] and far["ci95"][0] > 0 and "significant at the 5% level" in describe(far)
    assert paired([], []) is None and "not tested" in describe(None)


def test_mean_interval_is_the_student_t_interval():
    # 42, 48, 54: mean 48, sd 6, n 3: half-width 4.303 * 6 / sqrt(3) = 14.906
    mean, low, high = mean_interval([0.42, 0.48, 0.54])
    assert mean == pytest.approx(0.48) and low == pytest.approx(0.48 - 0.14906, abs=1e-4) and high == pytest.approx(0.48 + 0.14906, abs=1e-4)
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5) and mean_interval([]) is None
    assert mean_interval([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)  # no spread, no width
    values = [0.1 * (i % 10 + 1) for i in range(20)] + [0.5, 0.5]  # df 21: not in the table, t(21) = 2.080
    mean, low, high = mean_interval(values)
    assert (high - low) / 2 == pytest.approx(2.080 * statistics.stdev(values) / math.sqrt(22), rel=0.005)


def _data_efficiency(name: str = "data_efficiency_tables"):
    """A fresh copy of a benchmark module (the tables by default; "data_efficiency" for the script that makes the runs,
    "data_efficiency_studies" for the side studies' tables)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:  # the modules import each other by name, as the script does
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    de = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(de)
    return de


def test_the_data_efficiency_paired_table_subtracts_the_same_seed_and_skips_unpaired_runs():
    de = _data_efficiency()
    runs = [{"method": m, "fraction": 0.25, "seed": s, "accuracy": a} for m, s, a in [
        ("multi-task", 0, 0.70), ("label-only", 0, 0.40), ("multi-task", 1, 0.90), ("label-only", 1, 0.50),
        ("multi-task", 2, 0.80),  # no label-only run for seed 2: not paired
        (de.EQUAL_STEPS, 0, 0.70)]]  # fmt: skip
    table = de.paired_table(runs, [0.25])
    label_row = next(line for line in table.splitlines() if line.startswith("| label-only |"))
    assert "+35.0" in label_row and "(+30/+40)" in label_row  # (30 + 40) / 2, seeds 0 and 1 only
    equal_row = next(line for line in table.splitlines() if line.startswith(f"| {de.EQUAL_STEPS} |"))
    assert "+0.0 (n=1)" in equal_row


def test_the_goal_verdicts_pair_by_seed_and_find_the_smallest_fraction_that_reaches_label_only_at_100(tmp_path, monkeypatch):
    de = _data_efficiency()
    grid = {  # (method, fraction): accuracy on seeds 0, 1, 2
        ("label-only", 0.05): (0.50, 0.52, 0.48), ("multi-task", 0.05): (0.40, 0.41, 0.39),  # below on every seed
        ("label-only", 0.25): (0.40, 0.50, 0.45), ("multi-task", 0.25): (0.90, 0.95, 0.92),  # above on every seed
        ("label-only", 0.5): (0.60, 0.70, 0.65), ("multi-task", 0.5): (0.90, 0.96, 0.93),
        ("label-only", 1.0): (0.90, 0.94, 0.92), ("multi-task", 1.0): (0.95, 0.90, 0.97)}  # fmt: skip
    runs = [{"method": m, "fraction": f, "seed": s, "accuracy": a} for (m, f), accs in grid.items() for s, a in enumerate(accs)]
    runs.append({"method": "multi-task", "fraction": 0.125, "seed": 0, "accuracy": 0.3})  # no label-only twin: not paired
    g = de.goals(runs)
    assert g["below"] == [0.05] and g["above"] == [0.25, 0.5] and 0.125 not in g["paired"]
    diffs, (mean, _, _) = g["paired"][0.25]
    assert [round(d) for d in diffs] == [50, 45, 47] and round(mean, 1) == 47.3
    fraction, mean, by_seed = g["half"]  # 25% and 50% both reach label-only's 92.0 at 100%: the smaller one
    assert fraction == 0.25 and round(mean, 1) == 92.3 and [round(d) for d in by_seed] == [0, 1, 0]
    assert g["best"] == (pytest.approx(93.0), 0.5)  # multi-task's highest mean at <= 50% (0.125 has one run: 30)
    monkeypatch.setattr(de, "RUNS", tmp_path / "data_efficiency.jsonl")
    monkeypatch.setattr(de, "SUMMARY", tmp_path / "summary.md")
    monkeypatch.setattr(de, "TEACHER", tmp_path / "data_efficiency_teacher.json")
    (tmp_path / "data_efficiency-twohop-program.jsonl").write_text("\n".join(json.dumps(r) for r in runs) + "\n")
    (tmp_path / "data_efficiency_teacher-twohop-program.json").write_text(json.dumps({"accuracy": 0.97}))
    row = next(line for line in de.summary().splitlines() if line.startswith("| twohop | program (97%) |"))
    assert "no: below at 5%; above at 25%, 50% (not paired at 12.5%)" in row and "yes: 92.3 at 25% vs 92.0 (+0/+1/+0 by seed)" in row


def test_the_epochs_table_sets_longer_runs_beside_the_main_grid_on_the_same_seeds(tmp_path, monkeypatch):
    de = _data_efficiency("data_efficiency_studies")
    monkeypatch.setattr(de, "RUNS", tmp_path / "data_efficiency.jsonl")

    def write(path, rows):
        path.write_text("\n".join(json.dumps({"fraction": 0.25, **r}) for r in rows) + "\n")

    write(tmp_path / "data_efficiency-arith-program.jsonl", [{"method": m, "seed": s, "accuracy": a} for m, s, a in [
        ("label-only", 0, 0.06), ("label-only", 1, 0.05), ("label-only", 2, 0.07), ("multi-task", 0, 0.10), ("multi-task", 1, 0.08),
        ("multi-task", 2, 0.10), ("single-task", 0, 0.6)]])  # fmt: skip
    write(de.epochs_file("arith", "program", 6), [{"method": m, "seed": s, "accuracy": a, "epochs": 6} for m, s, a in [
        ("label-only", 0, 0.20), ("label-only", 1, 0.25), ("multi-task", 0, 0.40), ("multi-task", 1, 0.38)]])  # seed 2 not run yet
    table = de.epochs_table("arith", "program", 6)
    assert "equal steps" not in table and "single-task" not in table  # rows only for what the longer file holds
    row = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "(n=2)" in row["label-only, 2 epochs"]  # the main grid on the longer runs' seeds only
    assert "(+20/+13)" in row["multi-task minus label-only, 6 epochs"] and "(+4/+3)" in row["multi-task minus label-only, 2 epochs"]
    assert "(+14/+20)" in row["label-only, 6 minus 2 epochs"] and "(+30/+30)" in row["multi-task, 6 minus 2 epochs"]
    assert (tmp_path / "data_efficiency-arith-program-6epochs.md").read_text().count("--epochs 6") == 1
    # The equal-steps control trained as long sits beside them and multi-task is paired against it.
    with de.epochs_file("arith", "program", 6).open("a") as fh:
        fh.write("".join(json.dumps({"fraction": 0.25, "method": de.EQUAL_STEPS, "seed": s, "accuracy": a, "epochs": 6}) + "\n"
                         for s, a in [(0, 0.31), (1, 0.30)]))
    row = {line.split(" | ")[0].lstrip("| "): line for line in de.epochs_table("arith", "program", 6).splitlines() if line.startswith("| ")}
    assert "30.5" in row["label-only (equal steps), 6 epochs"] and "(+9/+8)" in row["multi-task minus label-only (equal steps), 6 epochs"]
    assert "label-only (equal steps), 2 epochs" not in row  # the main grid has none on these seeds: no empty row
    assert "--methods 'label-only,multi-task,label-only (equal steps)'" in (tmp_path / "data_efficiency-arith-program-6epochs.md").read_text()


def test_grid_runs_in_child_processes_at_most_jobs_at_once_and_a_failed_one_is_named_not_fatal(tmp_path):
    """--jobs: each run in its own process with the given threads, never more than ``jobs`` alive; a run that dies
    is reported with its log's last lines while the others still finish."""
    import sys

    de = _data_efficiency("data_efficiency")
    child = (  # a stand-in for one run: notes when it starts and ends, fails on seed 2, else writes its result
        "import json, os, sys, time; cell, out, trace = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
        "open(trace, 'a').write(f'start {cell[\"seed\"]}\\n'); time.sleep(0.3)\n"
        "open(trace, 'a').write(f'end {cell[\"seed\"]}\\n')\n"
        "if cell['seed'] == 2: print('CUDA out of memory, or the like'); sys.exit(3)\n"
        "open(out, 'w').write(json.dumps({'seed': cell['seed'], 'threads': os.environ['OMP_NUM_THREADS']}))\n")  # fmt: skip
    trace = tmp_path / "trace"
    cells = [{"variant": None, "method": "label-only", "fraction": 0.5, "seed": s} for s in range(5)]
    found = list(de.run_cells(cells, 2, tmp_path, threads=1, command=lambda cell, out: [sys.executable, "-c", child, json.dumps(cell), str(out), str(trace)]))
    assert sorted(c["seed"] for c, _, _ in found) == [0, 1, 2, 3, 4]
    assert {c["seed"]: r for c, r, _ in found if r} == {s: {"seed": s, "threads": "1"} for s in (0, 1, 3, 4)}
    (error,) = [e for _, r, e in found if r is None]
    assert error.startswith("exit 3") and "CUDA out of memory" in error
    alive = peak = 0
    for line in trace.read_text().splitlines():
        alive += 1 if line.startswith("start") else -1 if line.startswith("end") else 0
        peak = max(peak, alive)
    assert peak == 2  # two at once, never three


def test_a_results_file_cut_short_loses_only_its_last_run_and_a_broken_line_before_it_is_named(tmp_path, capsys):
    de = _data_efficiency()
    path = tmp_path / "runs.jsonl"
    path.write_text('{"seed": 0}\n{"seed": 1}\n{"seed": 2, "predictions": ["gar')  # killed mid-write
    assert de.read_runs(path) == [{"seed": 0}, {"seed": 1}] and "runs.jsonl:3: the last run was cut short" in capsys.readouterr().err
    assert de.read_runs(path, repair=True) == [{"seed": 0}, {"seed": 1}] and path.read_text() == '{"seed": 0}\n{"seed": 1}\n'
    path.write_text('{"seed": 0}\n{"seed": \n{"seed": 2}\n')
    with pytest.raises(SystemExit, match="runs.jsonl:2: not a JSON run"):
        de.read_runs(path)


def test_the_sweep_table_shows_each_schedule_s_own_runs_beside_the_default_paired_by_seed(tmp_path, monkeypatch):
    import json

    de = _data_efficiency("data_efficiency_studies")
    monkeypatch.setattr(de, "RUNS", tmp_path / "data_efficiency.jsonl")
    monkeypatch.setattr(de, "LAMBDA_RUNS", tmp_path / "data_efficiency_lambda.jsonl")

    def write(path, rows):
        path.write_text("".join(json.dumps({"fraction": 0.25, **r}) + "\n" for r in rows))

    write(tmp_path / "data_efficiency-twohop-program.jsonl", [{"method": m, "seed": s, "accuracy": a} for m, s, a in [
        ("multi-task", 0, 0.70), ("multi-task", 1, 0.90), ("label-only", 0, 0.40), ("label-only", 1, 0.50)]])  # fmt: skip
    write(tmp_path / "data_efficiency_lambda-twohop-program.jsonl",
          [{"method": "multi-task", "seed": s, "accuracy": a, "lambda": 0.25} for s, a in [(0, 0.80), (1, 0.80)]])
    write(tmp_path / "data_efficiency_lambda-twohop-program-linear-decay.jsonl",
          [{"method": "multi-task", "seed": s, "accuracy": a, "lambda": 1.0} for s, a in [(0, 0.75), (1, 0.97)]])
    de.lambda_table("twohop", "program")
    text = (tmp_path / "data_efficiency_lambda-twohop-program.md").read_text()
    table, paired = text.split("Paired by seed")
    row = lambda part, name: next(line for line in part.splitlines() if line.startswith(f"| {name} |"))  # noqa: E731
    assert "| 80.0 ± 0.0" in row(table, "multi-task, lambda = 0.25")
    assert "| 86.0 ± 15.6" in row(table, "multi-task, lambda = 1, linear-decay")  # its own runs, not the constant ones
    assert "| 80.0 ± 14.1" in row(table, "multi-task, lambda = 1, constant (the default)")
    assert "+6.0" in row(paired, "multi-task, lambda = 1, linear-decay") and "(+5/+7)" in row(paired, "multi-task, lambda = 1, linear-decay")
    assert "(+10/-10)" in row(paired, "multi-task, lambda = 0.25") and "(-30/-40)" in row(paired, "label-only")
    assert "--schedule linear-decay" in text and "--task twohop --teacher program --lambdas 0.25" in text


def test_a_right_answer_counts_as_right_for_the_right_reason_only_with_the_right_intermediate_result():
    from rationale_distill.records import Sample, TeacherRecord

    de = _data_efficiency()
    assert de.first_step("twohop", "Eva has a book. The book is in the attic.") == "book" and de.first_step("arith", "2 * 3 = 6. 6 + 1 = 7.") == "6"
    assert de.first_step("arith", "So the answer is 7.") is None and de.first_step("twohop", None) is None
    gold = json.loads((de.ROOT / "rationale_distill" / "demo" / "twohop_train.jsonl").read_text().splitlines()[0])  # Eva has a book
    samples = [Sample("t", 0, "x", "Eva has a book. The book is in the attic.", "attic"),  # right, right reason
               Sample("t", 1, "x", "Mia has a ball. The ball is in the attic.", "attic"),  # right answer, wrong first hop
               Sample("t", 2, "x", "Eva has a book. The book is in the garden.", "garden"),  # wrong: not counted
               Sample("t", 3, "x", "The attic.", "attic", parse_error="no rationale")]  # not ok: not counted  # fmt: skip
    record = TeacherRecord(gold["id"], gold, gold["question"], "attic", {}, [], [], samples)
    assert de.right_for_the_right_reason("twohop", [record]) == (2, 1)
    # The look-up task's one step is whose thing it is: a right colour read off another person's clause is the wrong reason.
    gold = json.loads((de.ROOT / "rationale_distill" / "demo" / "lookup_train.jsonl").read_text().splitlines()[1])  # Eva's kite, blue
    assert de.reference_rationale("lookup", gold) == "Eva has a blue kite." and de.first_step("lookup", "Max has a blue kite.") == "Max"
    samples = [Sample("t", 0, "x", "Eva has a blue kite.", "blue"), Sample("t", 1, "x", "Max has a blue kite.", "blue"),
               Sample("t", 2, "x", "Eva has a red kite.", "red")]  # fmt: skip
    record = TeacherRecord(gold["id"], gold, gold["question"], "blue", {}, [], [], samples)
    assert de.right_for_the_right_reason("lookup", [record]) == (2, 1)


def test_step_task_errors_are_sorted_by_which_step_went_wrong():
    de = _data_efficiency()
    hop = {"question": "Max has a kite, Tom has a cup. The kite is in the garage, the cup is in the garden. Where is the thing Tom has?",
           "answer": "garden", "reference_rationale": "Tom has a cup. The cup is in the garden."}  # fmt: skip
    assert [de.error_kind("twohop", hop, p) for p in ("garden", "cup", "garage", "attic", "Max", " garden ", None)] == [
        "right", "first step", "wrong hop", "other", "other", "right", "other"]  # fmt: skip  (None: no parseable answer)
    arith = {"question": "Eva buys 8 jars with 2 marbles in each. Eva finds 6 more marbles. How many marbles are there now?",
             "answer": "22", "reference_rationale": "8 jars with 2 marbles each is 8 * 2 = 16 marbles. 16 + 6 = 22."}  # fmt: skip
    assert [de.error_kind("arith", arith, p) for p in ("22", "16", "6")] == ["right", "first step", "other"]
    test = [json.loads(x) for x in (de.ROOT / "rationale_distill" / "demo" / "arith_test.jsonl").read_text().splitlines()]
    first = [__import__("re").search(r"= (\d+)", t["reference_rationale"]).group(1) for t in test]
    runs = [{"method": "multi-task", "fraction": 0.25, "seed": 0, "predictions": [t["answer"] for t in test[:50]] + first[50:]},
            {"method": "label-only", "fraction": 0.25, "seed": 0, "predictions": ["x"] * len(test)}]  # fmt: skip
    table = de.error_table(runs, "arith")
    assert "| multi-task | 25% | 1 | 50 | 100% | 0% |" in table and "| label-only | 25% | 1 | 100 | 0% | 100% |" in table


def test_recheck_says_whether_a_run_made_again_matches_the_committed_one(monkeypatch, tmp_path, capsys):
    """--recheck METHOD,FRACTION,SEED: a reviewer re-makes any number in a table; the verdict compares the accuracy and
    every answer the committed run kept, and a run that is not in the results file is refused before any work."""
    run = _data_efficiency("data_efficiency")
    assert run.recheck_spec("label-only (equal steps), 0.25, 2") == ("label-only (equal steps)", 0.25, 2)
    with pytest.raises(SystemExit, match="give METHOD,FRACTION,SEED"):
        run.recheck_spec("multi-task,0.25")
    committed = {"method": "multi-task", "fraction": 0.25, "seed": 0, "accuracy": 0.7, "predictions": ["a", "b", "c"]}
    line, same = run.compare_runs(committed, {**committed, "predictions": ["a", "b", "c"]})
    assert same and line == "multi-task, 25%, seed 0: committed 70.0%, made again 70.0%: the same (3 of 3 answers the same)"
    line, same = run.compare_runs(committed, {**committed, "predictions": ["a", "c", "b"]})  # same score, other answers
    assert not same and "(1 of 3 answers the same)" in line
    line, same = run.compare_runs(committed, {**committed, "accuracy": 0.68})
    assert not same and "differs by -2.0 points" in line
    line, same = run.compare_runs({k: v for k, v in committed.items() if k != "predictions"}, {**committed})
    assert same and "kept no per-question answers" in line
    # A run not in the file: one line naming the file, before a teacher is asked anything.
    monkeypatch.setattr(run, "RUNS", tmp_path / "data_efficiency.jsonl")
    (tmp_path / "data_efficiency-twohop-program.jsonl").write_text(json.dumps(committed) + "\n")
    monkeypatch.setattr(run, "teacher_records", lambda *a, **k: pytest.fail("no teacher call for a run that is not there"))
    monkeypatch.setattr(sys, "argv", ["x", "--task", "twohop", "--teacher", "program", "--recheck", "multi-task,0.5,0", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"data_efficiency-twohop-program.jsonl has no run multi-task, 0.5, seed 0"):
        run.main()
    # A run that is there is made again in a folder of its own, with the grid's own arguments for it.
    from types import SimpleNamespace

    made = []
    monkeypatch.setattr(run, "teacher_records", lambda work, task, who: (tmp_path / "teacher.jsonl", tmp_path / "test.jsonl"))
    monkeypatch.setattr(run, "teacher_accuracy", lambda *a, **k: {})
    monkeypatch.setattr(run, "generation", lambda *a, **k: (SimpleNamespace(data="twohop_test.jsonl"), None))
    monkeypatch.setattr(run, "one_run", lambda **cell: made.append(cell) or {**committed, "predictions": ["a", "b", "x"], "threads": 1, "wall_s": 9.0})
    monkeypatch.setattr(run, "RECHECKS", tmp_path / "rechecks.jsonl")
    monkeypatch.setattr(sys, "argv", ["x", "--task", "twohop", "--teacher", "program", "--recheck", "multi-task,0.25,0", "--work", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        run.main()
    assert stopped.value.code == 1 and "(2 of 3 answers the same)" in capsys.readouterr().out
    kept = json.loads((tmp_path / "rechecks.jsonl").read_text())
    assert (kept["task"], kept["teacher"], kept["committed"], kept["again"], kept["same"]) == ("twohop", "program", 0.7, 0.7, False)
    assert made[0]["work"] == tmp_path / "recheck" and made[0]["max_length"] == 128 and made[0]["rationale_weight"] == 1.0
    assert (made[0]["method"], made[0]["fraction"], made[0]["seed"], made[0]["epochs"]) == ("multi-task", 0.25, 0, 2)


def test_rationales_from_another_teacher_change_only_what_the_rationale_rows_say(tmp_path):
    """--rationales-from: the same examples, answers and rows, each right sample's rationale replaced by the other
    teacher's; the multi-task dataset built from them carries the other teacher's rationale and nothing else moves."""
    import rationale_distill as rd
    from rationale_distill.records import Sample, TeacherRecord, read_records, write_jsonl

    run = _data_efficiency("data_efficiency")
    q = "Max has a brown shoe, Eva has a blue kite. What color is Eva's kite?"

    def record(rid, samples):
        return TeacherRecord(rid, {"question": q, "answer": "blue"}, q, "blue", {"name": "p"}, [], [], samples)

    gemma = [record("a", [Sample("gemma", 0, "x", "Max has a blue kite.", "blue"),  # right answer, wrong person
                          Sample("gemma", 1, "x", "Eva has a brown kite.", "brown")]),  # wrong: stays as it is
             record("b", [Sample("gemma", 0, "x", "Eva has a blue kite!", "blue")])]  # fmt: skip
    program = [record("a", [Sample("program", 0, "x", "Eva has a blue kite.", "blue")]), record("b", [Sample("program", 0, "x", "Eva has a blue kite.", "blue")])]
    write_jsonl(tmp_path / "records-0.25-0.jsonl", gemma)
    write_jsonl(tmp_path / "teacher-program.jsonl", program)
    swapped = run.swap_rationales(tmp_path / "records-0.25-0.jsonl", tmp_path / "teacher-program.jsonl")
    assert swapped.name == "records-0.25-0-swapped.jsonl"
    after = read_records(swapped)
    assert [s.rationale for s in after[0].samples] == ["Eva has a blue kite.", "Eva has a brown kite."]
    assert [(r.id, r.label, [s.answer for s in r.samples]) for r in after] == [(r.id, r.label, [s.answer for s in r.samples]) for r in gemma]
    rows = {}
    for name, path in (("own", tmp_path / "records-0.25-0.jsonl"), ("swapped", swapped)):
        _, report = rd.build(str(path), rd.BuildConfig(records=str(path), out=str(tmp_path / name), mode="rationale",
                                                       validation_fraction=0.0, test_fraction=0.0))  # fmt: skip
        rows[name] = sorted(json.loads(x)["completion"] for x in (tmp_path / name / "train.jsonl").read_text().splitlines())
    assert len(rows["own"]) == len(rows["swapped"]) == 4 and "Max has a blue kite." in " ".join(rows["own"])
    assert "Max" not in " ".join(rows["swapped"]) and " ".join(rows["swapped"]).count("Eva has a blue kite.") == 2
    write_jsonl(tmp_path / "teacher-program.jsonl", program[:1])  # the other teacher must cover every example
    with pytest.raises(SystemExit, match="no right rationale for b"):
        run.swap_rationales(tmp_path / "records-0.25-0.jsonl", tmp_path / "teacher-program.jsonl")


def test_the_swap_table_pairs_other_rationales_against_the_teachers_own_on_the_same_seeds(tmp_path, monkeypatch):
    """The three arms of a --rationales-from run, from its own file (the same subsets): never the main grid's runs,
    which may have drawn from another pool of examples."""
    de = _data_efficiency("data_efficiency_studies")
    monkeypatch.setattr(de, "RUNS", tmp_path / "data_efficiency.jsonl")
    monkeypatch.setattr(de, "RESULTS", tmp_path)
    (tmp_path / "data_efficiency.jsonl").write_text(json.dumps({"method": "multi-task", "fraction": 0.125, "seed": 0, "accuracy": 0.99, "examples": 15}) + "\n")
    arms = [("label-only", None, 0, 0.50), ("label-only", None, 1, 0.60), ("label-only", None, 2, 0.55), ("multi-task", None, 0, 0.36),
            ("multi-task", None, 1, 0.40), ("multi-task", None, 2, 0.30), ("multi-task", "swapped", 0, 0.70), ("multi-task", "swapped", 1, 0.66)]  # fmt: skip
    de.swap_file("lookup", "gemma", "program").write_text("".join(
        json.dumps({"method": m, "fraction": 0.125, "seed": s, "accuracy": a, "examples": 17, **({"arm": arm} if arm else {})}) + "\n"
        for m, arm, s, a in arms))  # fmt: skip
    assert de.swap_file("lookup", "gemma", "program").name == "data_efficiency_rationales-from-program.jsonl"
    row = {line.split(" | ")[0].lstrip("| "): line for line in de.swap_table("lookup", "gemma", "program").splitlines() if line.startswith("| ")}
    assert "(n=3)" in row["label-only"] and "(n=2)" in row["multi-task, program's rationales for the same examples"]
    assert "35.3" in row["multi-task, gemma's own rationales"] and row["examples (mean over seeds)"] == "| examples (mean over seeds) | 17 |"
    assert "(+34/+26)" in row["multi-task, program's rationales for the same examples minus multi-task, gemma's own rationales"]
    assert "(+20/+6)" in row["multi-task, program's rationales for the same examples minus label-only"]
    assert "(-14/-20/-25)" in row["multi-task, gemma's own rationales minus label-only"]
    assert "--rationales-from program --fractions 0.125 --seeds 3" in (tmp_path / "data_efficiency_rationales-from-program.md").read_text()


def test_a_rationales_from_run_makes_all_three_arms_on_the_same_subsets_and_swaps_only_one(tmp_path, monkeypatch):
    from types import SimpleNamespace

    run = _data_efficiency("data_efficiency")
    monkeypatch.setattr(run, "RUNS", tmp_path / "data_efficiency.jsonl")
    monkeypatch.setattr(run, "swap_file", lambda task, who, other: tmp_path / f"swap-{task}-{who}-{other}.jsonl")
    monkeypatch.setattr(run, "TEACHER", tmp_path / "teacher.json")
    monkeypatch.setattr(run, "teacher_records", lambda work, task, who: (tmp_path / f"teacher-{who}.jsonl", tmp_path / "test.jsonl"))
    monkeypatch.setattr(run, "teacher_accuracy", lambda *a, **k: {})
    monkeypatch.setattr(run, "generation", lambda *a, **k: (SimpleNamespace(data="lookup_test.jsonl"), None))
    monkeypatch.setattr(run, "swap_table", lambda *a: None)
    made = []
    monkeypatch.setattr(run, "one_run", lambda **cell: made.append(cell) or {"method": cell["method"], "fraction": cell["fraction"],
                                                                            "seed": cell["seed"], "accuracy": 0.5})  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["x", "--rationales-from", "program", "--fractions", "0.125", "--seeds", "1", "--work", str(tmp_path)])
    run.main()
    assert [(c["method"], c.get("rationales_from")) for c in made] == [
        ("label-only", None), ("multi-task", None), ("multi-task", str(tmp_path / "teacher-program.jsonl"))]  # the Gemma records, one arm swapped
    assert {str(c["records"]) for c in made} == {str(tmp_path / "teacher-gemma.jsonl")}
    assert {c["rationale_weight"] for c in made} == {1.0}  # the arm's name is not a weight
    rows = [json.loads(x) for x in (tmp_path / "swap-lookup-gemma-program.jsonl").read_text().splitlines()]
    assert [(r["method"], r.get("arm"), r.get("rationales_from")) for r in rows] == [
        ("label-only", None, None), ("multi-task", None, None), ("multi-task", "swapped", "program")]
    made.clear()
    run.main()  # resumed: nothing left to make
    assert made == []
