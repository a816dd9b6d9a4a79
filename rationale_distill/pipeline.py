"""``rdistill run CONFIG.yaml``: generate -> build -> train -> eval from one YAML file.

The file's sections map 1:1 onto the stages' config dataclasses (GenerateConfig, BuildConfig, TrainConfig,
EvalConfig); paths in it are relative to the file. Stages already done are reused: teacher calls come from the
cache, and a student whose config and data are unchanged is not trained again. ``--only STAGE`` runs one stage.

    out: runs/demo                    # the run folder (relative to where you run the command)
    data: train.jsonl                 # rows for the teacher
    test_data: test.jsonl             # optional: held-out rows for the final comparison
    generate: {teachers: [local/gemma-3-270m], prompt: lookup-cot, input_field: question, label_field: answer}
    build:    {mode: rationale, label_source: gold}
    train:    {student: gemma-3-270m, lora: true}
    eval:     {batch_size: 16}
    compare:  {teacher: true, bare_prompt: lookup-bare}   # also score the prompted teacher / the bare model on test_data
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import build as build_config
from .config import load_yaml, option, to_dict
from .data.dataset import BuildConfig, build
from .errors import Pending, UsageError
from .evaluation.evaluate import EvalConfig, evaluate, records_summary
from .generation.generate import GenerateConfig, check_failures, generate
from .training import MANIFEST, TrainConfig, fingerprint, read_student, resolve, train

STAGES = ("generate", "build", "train", "eval")
SECTIONS = {"out", "data", "test_data", "generate", "build", "train", "eval", "compare"}


@dataclass
class CompareConfig:
    teacher: bool = option(True, help="also score the prompted teacher on test_data (one greedy answer per row)", cli=False)
    bare_prompt: str | None = option(None, help="also score the teacher under this prompt (e.g. one without demos) on test_data", cli=False)


@dataclass
class RunConfig:
    out: str
    data: str
    test_data: str | None = None
    generate: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)  # teacher: bool, bare_prompt: str | None
    source: str = "<dict>"


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - SECTIONS)
    if unknown:
        raise UsageError(f"{path}: unknown section {unknown[0]!r} (sections: {', '.join(sorted(SECTIONS))})")
    for key in ("out", "data"):
        if key not in data:
            raise UsageError(f"{path}: missing {key!r}")
    for key in ("out", "data", "test_data"):
        if key in data and not isinstance(data[key], str) and not (key == "test_data" and data[key] is None):
            raise UsageError(f"{path}: {key} = {data[key]!r}: expected a path")
    for key in ("generate", "build", "train", "eval", "compare"):
        data[key] = data.get(key) or {}
        if not isinstance(data[key], dict):
            raise UsageError(f"{path}: section {key!r} must be a mapping of settings, got {type(data[key]).__name__}")
    base = path.resolve().parent

    def rel(p):
        return None if p is None else str(p if Path(p).is_absolute() else (base / p))

    data["data"], data["test_data"] = rel(data["data"]), rel(data.get("test_data"))
    prompt = data["generate"].get("prompt")
    if isinstance(prompt, str) and prompt.endswith((".yaml", ".yml")):
        data["generate"]["prompt"] = rel(prompt)
    return RunConfig(**data, source=str(path))


def stage_configs(run: RunConfig) -> tuple[GenerateConfig, BuildConfig, TrainConfig]:
    out = Path(run.out)
    where = run.source
    gen = build_config(GenerateConfig, {**run.generate, "data": run.data, "out": str(out / "teacher.jsonl")}, f"{where}: generate")
    bld = build_config(BuildConfig, {**run.build, "records": gen.out, "out": str(out / "data")}, f"{where}: build")
    trn = build_config(TrainConfig, {**run.train, "data": bld.out, "out": str(out / "student")}, f"{where}: train")
    # The eval and compare sections are checked here too, before generate spends anything.
    build_config(EvalConfig, {**run.eval, "student": trn.out}, f"{where}: eval")
    build_config(CompareConfig, run.compare, f"{where}: compare")
    return gen, bld, trn


def run_pipeline(run: RunConfig, only: str | None = None, plugins=None, progress: bool = True, say=print) -> dict:
    """Run the stages in order (or only one); returns a summary with every measured number and artifact path."""
    if only is not None and only not in STAGES:
        raise UsageError(f"--only {only!r}: choose one of {', '.join(STAGES)}")
    gen, bld, trn = stage_configs(run)
    todo = [only] if only else list(STAGES)
    timings: dict[str, float] = {}
    summary = {"out": run.out, "timings_s": timings}

    def timed(stage, fn):
        started = time.perf_counter()
        say(f"[{stage}] ...")
        value = fn()
        timings[stage] = round(time.perf_counter() - started, 1)
        say(f"[{stage}] done in {timings[stage]:.1f} s")
        return value

    if "generate" in todo:
        result = timed("generate", lambda: generate(gen, plugins=plugins, progress=progress))
        summary["generate"] = result.stats.as_dict()
        if result.batches is not None and (result.batches.open or result.batches.queued):
            n = result.batches.open
            raise Pending(f"stopping after generate: {n} batch{'es' * (n != 1)} still running at the provider (batch_wait: false); "
                          "re-run the same command to collect them and go on (nothing is submitted twice)")  # fmt: skip
        check_failures(result, gen)
    if "build" in todo:
        _, report = timed("build", lambda: build(bld.records, bld, plugins=plugins))
        summary["build"] = {k: report[k] for k in ("examples", "examples_kept", "rows", "rows_by_task", "filters")}
    if "train" in todo:
        summary["train"] = timed("train", lambda: train_or_reuse(trn, plugins, say))
    if "eval" in todo:
        summary.update(timed("eval", lambda: evaluate_with_baselines(run, gen, trn, plugins, progress)))
    Path(run.out).mkdir(parents=True, exist_ok=True)
    (Path(run.out) / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def train_or_reuse(config: TrainConfig, plugins, say) -> dict:
    """Train, unless the folder already holds a complete student of the same settings and data, every file
    unchanged since (hashes in its manifest)."""
    from .plugins import load_plugins

    config = resolve(config, plugins or load_plugins())  # the trainer's default student, as train() fills it in
    if (Path(config.out) / MANIFEST).is_file() and not config.resume:
        try:
            meta = read_student(config.out, verify=True)
        except UsageError as exc:
            say(f"[train] not reusing: {exc}")
        else:
            if meta.get("fingerprint") == fingerprint(config):
                say(f"[train] reusing {config.out}: same config and data, files unchanged")
                return {"reused": True, "out": config.out}
    out = train(config, plugins=plugins)
    meta = read_student(out)
    losses = [h["loss"] for h in meta["log_history"] if "loss" in h]
    return {"reused": False, "out": str(out), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "train_runtime_s": meta["train_runtime_s"]}  # fmt: skip


def evaluate_with_baselines(run: RunConfig, gen: GenerateConfig, trn: TrainConfig, plugins, progress) -> dict:
    out = Path(run.out)
    compare = to_dict(build_config(CompareConfig, run.compare, f"{run.source}: compare"))
    eval_settings = dict(run.eval)
    limit = eval_settings.get("limit")
    test = run.test_data
    found = {}
    teacher_records = gen.out
    if test and compare.get("teacher"):
        # The prompted teacher on the held-out rows: one greedy answer each, through the same cached path.
        # concurrency=1: each recorded latency is one answer alone, comparable with the student's batch-1 latency.
        # Online even when the training set went by batch: the comparison needs the teacher's latency per answer.
        teacher_test = replace(gen, data=test, out=str(out / "teacher-test.jsonl"), samples=1, temperature=0.0, limit=limit,
                               concurrency=1, batch=False)  # fmt: skip
        generate(teacher_test, plugins=plugins, progress=progress)
        teacher_records = teacher_test.out
    if test and compare.get("bare_prompt"):
        bare = replace(gen, data=test, out=str(out / "bare-test.jsonl"), samples=1, temperature=0.0, limit=limit,
                       prompt=compare["bare_prompt"], concurrency=1, batch=False)  # fmt: skip
        bare_result = generate(bare, plugins=plugins, progress=progress)
        found["bare"] = records_summary(bare_result.records)
    config = build_config(EvalConfig, {"student": trn.out, "data": test or run.eval.get("data"),
                                       "label_field": gen.label_field if test else None,
                                       "teacher_records": teacher_records, "teacher_api_base": gen.api_base, "out": str(out / "report"),
                                       **{k: v for k, v in eval_settings.items() if k != "data"}},
                          f"{run.source}: eval")  # fmt: skip
    report = evaluate(config, plugins)
    found["student"] = report["student"]
    found["teacher"] = report["teacher"]
    found["report"] = str(out / "report" / "report.md")
    return found


def demo_config(out: str = "runs/demo", quick: bool = False) -> RunConfig:
    """The packaged demo: Gemma 3 270M teaches itself a look-up task through an engineered few-shot CoT prompt."""
    from importlib import resources

    run = load_run_config(str(resources.files("rationale_distill.demo") / "demo.yaml"))
    run.out = out
    if quick:  # a smoke run of a couple of minutes: the tests use it
        run.generate = {**run.generate, "limit": 16, "samples": 2}
        run.build = {**run.build, "validation_fraction": 0.0}
        run.train = {**run.train, "max_steps": 6, "epochs": 1, "eval_split": "none", "save_strategy": "no"}
        run.eval = {**run.eval, "limit": 8, "latency_samples": 4}
    return run
