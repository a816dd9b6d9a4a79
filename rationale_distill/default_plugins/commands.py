"""Built-in CLI commands, registered through ``register_commands`` like any plugin's."""

from __future__ import annotations

from ..config import add_arguments, from_args, load_yaml
from ..errors import UsageError
from ..hookspecs import hookimpl


def console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def table(title: str, rows: list[tuple], columns=("", "")):
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_header=any(columns))
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*(str(x) for x in row))
    return t


def add_stage_arguments(parser, config_cls) -> None:
    """A stage's flags come from its config dataclass, plus --config for a YAML file of the same settings."""
    add_arguments(parser, config_cls)
    parser.add_argument("--config", help=f"a YAML file of {config_cls.__name__} settings; flags override it")


def stage_config(config_cls, args):
    """The YAML file's settings (if --config), then the flags given on top of them."""
    if args.config:
        return from_args(config_cls, args, load_yaml(args.config), base_where=args.config)
    return from_args(config_cls, args)


# --- generate ---------------------------------------------------------------------------------------


def configure_generate(parser):
    from ..generation.generate import GenerateConfig

    add_stage_arguments(parser, GenerateConfig)


def run_generate(args, plugins) -> int:
    from ..generation.generate import GenerateConfig, check_failures, generate

    config = stage_config(GenerateConfig, args)
    if not config.out and not config.dry_run:
        raise UsageError("--out is required (the teacher-records JSONL to write), or pass --dry-run")
    result = generate(config, plugins=plugins, progress=True)
    if result.dry_run:
        d = result.dry_run
        cost = "unknown (pass --price IN,OUT)" if d.cost is None else f"${d.cost:.4f}"
        rows = [("calls planned", d.calls), ("already cached", d.cached), ("to make", d.to_make),
                ("est. prompt tokens", f"{d.prompt_tokens:,}"), ("est. completion tokens", f"{d.completion_tokens:,}"),
                ("est. cost" + (" online" if config.batch else ""), cost)]  # fmt: skip
        if config.batch:
            batch_cost = "unknown (pass --price IN,OUT)" if d.batch_cost is None else f"${d.batch_cost:.4f}"
            rows += [("batch files (one batch each)", d.batch_files), ("est. cost at batch price", batch_cost)]
        console().print(table("Dry run: nothing was called", rows))
        return 0
    if result.batches is not None and (result.batches.open or result.batches.queued):
        console().print(batches_table(result.batches.batches, "Batches submitted: not waiting (--no-wait)"))
        queued = f", {result.batches.queued} requests wait for room (--batch-max-open)" if result.batches.queued else ""
        n = result.batches.open
        console().print(f"{n} batch{'es run' if n != 1 else ' runs'} at the provider{queued}; the same command collects them (and submits nothing twice); "
                        f"`rdistill batches list {config.out}` shows them, `rdistill batches cancel {config.out}` stops them")  # fmt: skip
        return 0
    console().print(summary_table(result.stats, result.out))
    check_failures(result, config)
    return 0


def summary_table(stats, out):
    cost = f"${stats.cost:.4f}" + (f" (+{stats.cost_unknown} calls of unknown price: pass --price)" if stats.cost_unknown else "")
    rows = [
        ("inputs", stats.inputs), ("answer type", stats.answer_type), ("calls", stats.calls), ("done now", stats.made), ("cached", stats.cached),
        ("failed", stats.failed), ("failed before (not resent)", stats.failed_before), ("inputs with failures", stats.failed_inputs),
        ("retries", stats.retries), ("samples", stats.samples), ("parse failures", stats.parse_failures),
        ("cut at max_tokens", stats.truncated),
        ("tokens (prompt / completion)", f"{stats.prompt_tokens:,} / {stats.completion_tokens:,}"),
        ("cost this run", cost), ("wall time", f"{stats.wall_s:.2f} s"),
        ("requests/s", f"{stats.made / stats.wall_s:.1f}" if stats.wall_s else "-"),
    ]  # fmt: skip
    if stats.failures:
        rows.append(("failures by kind", ", ".join(f"{k} {n}" for k, n in stats.failures.most_common())))
    if stats.errors:
        rows += [("error", f"{n} x {msg}") for msg, n in stats.errors.most_common(3)]
    rows += [("note", note) for note in stats.notes]
    if out:
        rows.append(("records", str(out)))
    return table("Generation summary", rows)


def batches_table(subs, title: str):
    rows = []
    for sub in subs:
        c = sub.counts or {}
        counts = f"{c.get('completed', 0)} / {c.get('failed', 0)} / {c.get('total', len(sub.keys))}" if c else f"- / - / {len(sub.keys)}"
        cost = f"${sub.cost:.4f}" if sub.collected else "-"
        rows.append((sub.batch_id or f"(file {sub.file_id}, no batch yet)", sub.teacher, sub.status + (" (collected)" if sub.collected else ""),
                     counts, f"{sub.bytes:,}", cost))  # fmt: skip
    return table(title, rows, columns=("batch", "teacher", "status", "done / failed / total", "bytes", "cost collected"))


# --- batches ----------------------------------------------------------------------------------------


def configure_batches(parser):
    parser.add_argument("action", choices=("list", "cancel"), help="list: status, counts and cost; cancel: stop every running batch")
    parser.add_argument("out", help="the --out of `rdistill generate --batch` (its journal is OUT.batches.jsonl beside it)")
    parser.add_argument("--api-base", help="the provider's base URL, where the journaled one is redacted or has moved")
    parser.add_argument("--offline", action="store_true", help="list: what the journal says, without asking the provider")


def run_batches_command(args, plugins) -> int:
    from ..generation.batch import cancel_batches, list_batches

    if args.action == "cancel":
        cancelled = cancel_batches(args.out, api_base=args.api_base)
        console().print(batches_table(cancelled, f"Cancelled {len(cancelled)} batch{'es' * (len(cancelled) != 1)}"))
        if cancelled:
            console().print("the next `rdistill generate --batch` run collects what they answered before stopping and records the "
                            "rest as cancelled (not cached: a later run submits them again)")  # fmt: skip
        return 0
    subs = list_batches(args.out, api_base=args.api_base, refresh=not args.offline)
    console().print(batches_table(subs, f"Batches of {args.out}"))
    return 0


# --- build ------------------------------------------------------------------------------------------


def configure_build(parser):
    from ..data.dataset import BuildConfig

    add_stage_arguments(parser, BuildConfig)


def run_build(args, plugins) -> int:
    from ..data.dataset import BuildConfig, build, decision

    config = stage_config(BuildConfig, args)
    if not config.out:
        raise UsageError("--out is required (the dataset folder to write)")
    _, report = build(config.records, config, plugins=plugins)
    rows = [("examples kept", f"{report['examples_kept']} of {report['examples']}"),
            *[(f"rows: {k}", v) for k, v in sorted(report["rows"].items())],
            *[(f"rows: task {k}", v) for k, v in sorted(report["rows_by_task"].items())],
            *[(decision(k), v) for k, v in report["filters"].items()],
            *[(f"filter {name}", ", ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, dict))
               + "".join(f"; {k}: " + ", ".join(f"{a} {b}" for a, b in v.items()) for k, v in d.items() if isinstance(v, dict)))
              for name, d in report.get("filter_details", {}).items()],
            ("dataset", config.out)]  # fmt: skip
    console().print(table("Build summary", rows))
    return 0


# --- train and eval ---------------------------------------------------------------------------------


def configure_train(parser, plugins=None):
    from ..training import TrainConfig

    add_stage_arguments(parser, TrainConfig)
    for entry in trainer_configs(plugins):  # each trainer's own settings: a flag group per trainer
        add_arguments(parser.add_argument_group(f"--trainer {entry.name}"), entry.options["config"])


def trainer_configs(plugins) -> list:
    return [e for e in (plugins.trainers if plugins is not None else []) if e.options.get("config") is not None]


def run_train(args, plugins) -> int:
    import dataclasses

    from ..training import TrainConfig, eval_summary, fit_summary, read_student, train

    config = stage_config(TrainConfig, args)
    options = dict(config.trainer_options)
    for entry in trainer_configs(plugins):
        for f in dataclasses.fields(entry.options["config"]):
            if getattr(args, f.name, None) is None:
                continue
            if entry.name != config.trainer:
                raise UsageError(f"--{f.name.replace('_', '-')} is a setting of --trainer {entry.name}, not of {config.trainer}")
            options[f.name] = getattr(args, f.name)
    config = dataclasses.replace(config, trainer_options=options)
    out = train(config, plugins=plugins)
    meta = read_student(out)
    losses = [h["loss"] for h in meta["log_history"] if "loss" in h]
    console().print(table("Training summary", [
        ("student", meta["config"]["student"]), ("trainer", config.trainer), ("device", meta["device"]),
        ("parameters (trained)", f"{meta['parameters']:,} ({meta['trainable_parameters']:,})"),
        ("loss (first -> last)", f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "-"),
        *[(f"rows that fit ({split})", fit_summary(f)) for split, f in meta.get("fit", {}).items()],
        *([("validation loss", validation)] if (validation := eval_summary(meta)) else []),
        ("wall time", f"{meta['train_runtime_s'] or 0:.1f} s"), ("model", str(out))]))  # fmt: skip
    return 0


def configure_eval(parser):
    from ..evaluation.evaluate import EvalConfig

    add_arguments(parser, EvalConfig)


def run_eval(args, plugins) -> int:
    from ..evaluation.evaluate import EvalConfig, evaluate, table_rows

    config = from_args(EvalConfig, args)
    report = evaluate(config, plugins)
    rows = table_rows(report)
    console().print(table("Evaluation", rows[1:], columns=rows[0]))
    if config.out:
        console().print(f"report: {config.out}/report.md (JSON and PNG beside it)")
    return 0


# --- run and demo -----------------------------------------------------------------------------------


def configure_run(parser):
    parser.add_argument("config", help="a run YAML file with generate/build/train/eval sections")
    parser.add_argument("--only", choices=("generate", "build", "train", "eval"), help="run one stage")
    parser.add_argument("--out", help="override the run folder")


def run_run(args, plugins) -> int:
    from ..pipeline import load_run_config, run_pipeline

    run = load_run_config(args.config)
    if args.out:
        run.out = args.out
    summary = run_pipeline(run, only=args.only, plugins=plugins)
    print_run_summary(summary)
    return 0


def configure_demo(parser):
    parser.add_argument("--quick", action="store_true", help="a smoke run of a couple of minutes (16 questions, 6 steps)")
    parser.add_argument("--out", default="runs/demo", help="the run folder")
    parser.add_argument("--objective", choices=("sft", "kd", "multitask+kd"), default=None,
                        help="train the student on the teacher's text (sft, the default), or on its soft targets too: the "
                             "prompted Gemma is a white-box teacher (kd, multitask+kd; see `rdistill train --help`)")  # fmt: skip


def run_demo(args, plugins) -> int:
    from ..pipeline import demo_config, run_pipeline

    run = demo_config(out=args.out, quick=args.quick)
    if args.objective and args.objective != "sft":  # the demo's teacher, read white-box through its engineered prompt
        run.train = {**run.train, "objective": args.objective, "teacher_model": "gemma-3-270m"}
    console().print(f"rationale-distill demo: Gemma 3 270M teaches itself, offline, on {'a smoke run' if args.quick else 'the look-up task'}"
                    f" -> {run.out}")  # fmt: skip
    summary = run_pipeline(run, plugins=plugins)
    print_run_summary(summary)
    return 0


def print_run_summary(summary: dict) -> None:
    if "student" not in summary:
        return
    s, t, b = summary["student"], summary.get("teacher") or {}, summary.get("bare") or {}

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x, fmt):
        return "-" if x is None else fmt.format(x)

    rows = [
        ("accuracy on held-out questions", pct(t.get("accuracy")), pct(b.get("accuracy")), pct(s["accuracy"])),
        ("prompt tokens per answer", num(t.get("prompt_tokens"), "{:.0f}"), num(b.get("prompt_tokens"), "{:.0f}"), num(s["prompt_tokens"], "{:.0f}")),
        ("latency per answer (s)", num(t.get("latency_s"), "{:.3f}"), num(b.get("latency_s"), "{:.3f}"), num(s["latency_s"], "{:.3f}")),
        ("examples", t.get("n_matched", "-"), b.get("n", "-"), s["n"]),
    ]  # fmt: skip
    console().print(table("Distillation result (measured)", rows, columns=("", "prompted teacher", "bare model", "distilled student")))
    out = summary["out"]
    console().print(table("Artifacts", [
        ("teacher records", f"{out}/teacher.jsonl"), ("dataset (+ card)", f"{out}/data"), ("student", f"{out}/student"),
        ("report", summary["report"]), ("summary", f"{out}/summary.json"),
        ("stage times", ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items()))]))  # fmt: skip


# --- plugins ----------------------------------------------------------------------------------------


def configure_plugins(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_plugins(args, plugins) -> int:
    import json

    from ..plugins import KINDS, plugin_origin

    rows = [(kind, e.name, e.plugin, plugin_origin(plugins, e.plugin)) for kind in KINDS for e in getattr(plugins, kind)]
    if args.json:
        print(json.dumps([dict(zip(("kind", "name", "plugin", "origin"), r)) for r in rows], indent=2))
        return 0
    console().print(table("Plugins", rows, columns=("kind", "name", "plugin", "from")))
    return 0


@hookimpl
def register_commands(register):
    register("generate", configure_generate, run_generate, help="ask teachers for rationales; write teacher records (JSONL)")
    register("batches", configure_batches, run_batches_command, help="list or cancel the batches of a `generate --batch` run")
    register("build", configure_build, run_build, help="filter teacher records and write training pairs (DatasetDict + JSONL)")
    register("train", configure_train, run_train, help="fine-tune a student on a built dataset (TRL SFT, multi-task, LoRA)")
    register("eval", configure_eval, run_eval, help="evaluate a student against the gold labels and the teacher")
    register("run", configure_run, run_run, help="run generate -> build -> train -> eval from one YAML file")
    register("demo", configure_demo, run_demo, help="the offline demo: a real distillation of Gemma 3 270M on CPU")
    register("plugins", configure_plugins, run_plugins, help="list teachers, prompts, parsers, filters, loaders, trainers and where each came from")
