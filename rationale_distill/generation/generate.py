"""The generation loop: rows -> prompts -> teacher calls (cached, journaled, limited, retried) -> records.

Read it top to bottom: ``generate()`` loads the rows, renders the prompt, plans one call per (input, teacher,
sample) (or per (input, teacher) where the provider returns ``n`` choices), answers what it can from the
cache, runs the rest under a semaphore and rate limits, and assembles one ``TeacherRecord`` per input.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import default_cache_dir, option
from ..errors import BudgetExceeded, CompletedWithFailures, PluginError, UsageError
from ..records import Sample, TeacherRecord, write_jsonl
from .calls import Call, Stats, run_calls
from .parsing import ParseFailure, parse_sample
from .prompts import PromptSpec, resolve_prompt
from .rows import (DEFAULT_WINDOW, Example, describe_answer_type, load_rows, prepare_row, prepare_rows, prompt_chars,  # noqa: F401
                   row_notes, settle_answer_type, skipped_path, within_window)  # prepare_row, load_rows: imported from here by users
from .store import Store, call_key, exclusive
from .teachers import Request, Teacher, install_providers, parse_price


@dataclass
class GenerateConfig:
    data: str = option(help="the input data file (.jsonl, .json or .csv)", positional=True)
    teachers: list[str] = option(factory=lambda: ["openai/gpt-4o-mini"], flag="teacher",
                            help="a LiteLLM model string (openai/gpt-4o-mini), a registered teacher, or NAME:MODEL")
    prompt: str = option("few-shot-cot", help="a registered prompt name or a path to a prompt YAML file")
    input_field: str | None = option(None, help="the row field that fills {input} in the prompt template")
    label_field: str | None = option(None, help="the row field holding the gold label, if any")
    id_field: str | None = option(None, help="the row field holding a stable example id (default: the line number)")
    answer_type: str | None = option(None, help="text | number | choice: how answers are read and compared (default: the prompt's, else inferred from the gold labels)", choices=("text", "number", "choice"))
    options: list[str] | None = option(None, flag="option", help="with --answer-type choice: one option (a letter or a label string)")
    samples: int = option(1, help="samples per input per teacher, for self-consistency voting", ge=1)
    concurrency: int = option(16, help="requests in flight at once", ge=1)
    rpm: float | None = option(None, help="requests per minute limit, all teachers together", gt=0)
    tpm: float | None = option(None, help="tokens per minute limit (prompt + max completion tokens)", gt=0)
    max_retries: int = option(6, help="retries per request on 429, 5xx, connection errors and timeouts", ge=0)
    retry_base_delay: float = option(1.0, help="seconds before the first retry; doubled per attempt, with jitter", ge=0)
    max_retry_after: float = option(60.0, help="longest wait before a retry, in seconds, whatever the provider's Retry-After says", ge=0)
    retry_failed: bool = option(False, help="resend requests that failed permanently (4xx) in an earlier run; by default they stay failed")
    allow_failures: float = option(0.0, help="inputs allowed to fail before the exit code says 'completed with failures' (4): a count, or a fraction below 1", ge=0)
    rate_window: float = option(60.0, help="seconds per --rpm/--tpm window (tests shrink it)", cli=False, gt=0)
    timeout: float = option(120.0, help="seconds per request", gt=0)
    temperature: float | None = option(None, help="sampling temperature (default: the prompt's, else 0.7 with --samples > 1, else 0)", ge=0, le=5)
    max_tokens: int | None = option(None, help="maximum completion tokens per sample", ge=1)
    seed: int = option(0, help="base seed; sample i uses seed + i", ge=0)
    api_base: str | None = option(None, help="base URL of the provider, e.g. http://127.0.0.1:8000/v1 for vLLM")
    api_key_env: str | None = option(None, help="environment variable holding the API key (default: the provider's)")
    price: str | None = option(None, help="IN,OUT: USD per 1M input and output tokens, for models LiteLLM has no price for")
    max_cost: float | None = option(None, help="stop cleanly once this many USD are spent", gt=0)
    logprobs: int | None = option(None, help="ask for the top-K logprobs and keep those of the answer tokens", ge=0, le=20)
    skip_bad_rows: bool = option(False, help="skip rows that cannot be used (missing/null/list fields, prompts too big for the model), counted and listed in OUT.skipped.jsonl, instead of stopping at the first")
    max_prompt_tokens: int | None = option(None, help="refuse rows whose prompt is estimated above this many tokens (default: the model's context window where LiteLLM knows it, else 131072)", ge=1)
    limit: int | None = option(None, help="use only the first N rows", ge=1)
    workers: int = option(1, help="processes, one event loop each, sharing the cache and journal (use one per CPU core for fast HTTP teachers)", ge=1, le=256)
    dry_run: bool = option(False, help="count calls and tokens and estimate the cost; call nothing")
    batch: bool = option(False, help="send the requests through the provider's batch API (LiteLLM files + batches: about half the price, answered within 24 h); the same requests and cache as online")
    batch_wait: bool = option(True, flag="wait", help="with --batch: wait for the batches and write the records; --no-wait submits, journals the batch ids beside --out and exits (the same command later collects)")
    batch_max_requests: int = option(50_000, help="with --batch: requests per batch file (OpenAI's limit: 50,000)", ge=1)
    batch_max_bytes: int = option(200 * 1024 * 1024, help="with --batch: bytes per batch file (OpenAI's limit: 200 MB)", ge=1024)
    batch_poll: float = option(30.0, help="with --batch: seconds before the next poll of a batch; grows 1.5x per poll up to --batch-poll-max", gt=0)
    batch_poll_max: float = option(600.0, help="with --batch: the longest wait between polls, in seconds", gt=0)
    batch_max_open: int | None = option(None, help="with --batch: at most N batches open at the provider at once, the rest submitted as they end (stay under its enqueued-token limit; a full queue is also waited out when the provider reports it)", ge=1)
    batch_resubmits: int = option(2, help="with --batch: follow-up batches for requests that failed transiently (429, 5xx) or that an expired batch never answered", ge=0)
    batch_discount: float = option(0.5, help="with --batch: the batch price as a fraction of the online price, where LiteLLM knows no batch price (and for --price)", gt=0, le=1)
    cache_dir: str | None = option(None, help="cache and journal folder (default: $RDISTILL_CACHE_DIR or ~/.cache/rationale-distill)")
    out: str | None = option(None, help="output JSONL of teacher records")


@dataclass
class DryRun:
    calls: int
    cached: int
    to_make: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # online
    batch_cost: float | None = None  # with --batch: the same tokens at the batch price
    batch_files: int = 0  # with --batch: the request files (one batch each) the calls make


@dataclass
class Result:
    records: list[TeacherRecord]
    stats: Stats
    out: Path | None = None
    dry_run: DryRun | None = None
    batches: object | None = None  # with --batch: batch.BatchReport


def generate(config: GenerateConfig, plugins=None, progress: bool = False) -> Result:
    """Run the generation stage. The CLI calls exactly this."""
    from ..plugins import load_plugins

    plugins = plugins or load_plugins()
    spec = resolve_prompt(plugins, config.prompt)
    rows = load_rows(plugins, config.data, config.limit)
    spec, answer_type_source = settle_answer_type(spec, config, rows)
    teachers = [resolve_teacher(plugins, t, config) for t in config.teachers]
    if len({t.name for t in teachers}) != len(teachers):
        raise UsageError("--teacher: the same teacher is named twice; use --samples for more samples")
    if config.samples < 1 or config.concurrency < 1:
        raise UsageError("--samples and --concurrency must be at least 1")
    if not config.batch and not config.batch_wait:
        raise UsageError("--no-wait: only with --batch (online calls cannot be left running at the provider)")
    if config.batch and config.max_cost is not None:
        raise UsageError("--max-cost with --batch: a submitted batch cannot stop at a budget; see its cost first with --batch --dry-run")
    # Rows over an explicit --max-prompt-tokens are refused now; the model's own window is asked for below.
    examples, skipped = prepare_rows(spec, config, rows, config.max_prompt_tokens)
    with contextlib.ExitStack() as locks:
        if not config.dry_run:
            # One run at a time per cache and per output: two would pay for the same calls twice.
            root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            locks.enter_context(exclusive(root / "lock", f"the cache {root}", "pass --cache-dir DIR to run in parallel"))
            if config.out:
                out = Path(config.out)
                locks.enter_context(exclusive(out.with_name(f".{out.name}.lock"), f"the output {out}", "pass another --out"))
        store = Store(config.cache_dir)
        calls = plan_calls(spec, config, teachers, examples)
        failed_before = look_up(calls, store, config)
        if config.dry_run or not all(c.cached for c in calls):
            # Something is to be sent (or priced): only now are the teachers asked what they accept. That is what
            # imports LiteLLM (2-4 s), so a re-run answered wholly from the cache never waits for it.
            fits = check_teachers(plugins, teachers, spec, config, examples, skipped)
            if len(fits) < len(examples):
                examples = fits
                calls = plan_calls(spec, config, teachers, examples)
                failed_before = look_up(calls, store, config)
        return run_generation(config, plugins, spec, answer_type_source, examples, calls, progress, skipped, store, failed_before)


def check_teachers(plugins, teachers: list[Teacher], spec: PromptSpec, config: GenerateConfig, examples: list,
                   skipped: list[tuple[str, str]]) -> list:  # fmt: skip
    """Refuse what no teacher can take, before anything is sent; returns the examples whose prompts fit the
    smallest context window among the teachers (rows over it stop the run or, with --skip-bad-rows, are listed)."""
    install_providers(plugins)  # before asking a teacher what it accepts: local/ and plugin providers are known then
    for t in teachers:
        reason = t.refuses(spec.format)
        if reason:
            raise UsageError(f"--teacher {t.name} with --prompt {spec.name}: {reason}")
        if config.batch and not getattr(t, "batch_provider", None):
            raise UsageError(f"--batch: {t.name} has no batch API through LiteLLM (OpenAI, Azure and OpenAI-compatible servers "
                             "at --api-base have); run it without --batch")  # fmt: skip
    if config.max_cost is not None:
        unpriced = [t.name for t in teachers if t.cost_of(1000, 1000) is None]
        if unpriced:
            raise UsageError(f"--max-cost: no price is known for {unpriced[0]}, so the budget could never trigger; "
                             "pass --price IN,OUT (USD per 1M input and output tokens)")  # fmt: skip
    if config.max_prompt_tokens:
        return examples  # checked already
    window = min((w for w in (t.context_window() for t in teachers) if w), default=DEFAULT_WINDOW)
    return within_window(examples, skipped, config, window)


def look_up(calls: list[Call], store: Store, config: GenerateConfig) -> int:
    """Fill each call's entry from the cache; returns how many are permanent failures of an earlier run (kept as
    such until --retry-failed)."""
    failed_before = 0
    for call in calls:
        call.entry = store.get(call.key)
        if call.entry is None and not config.retry_failed:
            call.entry = store.failure(call.key)
            failed_before += call.entry is not None
        call.cached = call.entry is not None
    return failed_before


def run_generation(config, plugins, spec, answer_type_source, examples, calls, progress, skipped, store: Store,
                   failed_before: int) -> Result:  # fmt: skip
    if config.dry_run:
        stats = Stats(inputs=len(examples), calls=len(calls), notes=row_notes(examples, skipped, config))
        return Result(records=[], stats=stats, dry_run=estimate(spec, config, calls))

    stats = Stats(inputs=len(examples), calls=len(calls), cached=sum(c.cached for c in calls) - failed_before,
                  failed_before=failed_before, answer_type=describe_answer_type(spec, answer_type_source))
    for call in calls:
        if call.cached and not call.entry.get("ok"):
            stats.failures[call.entry.get("kind", "error")] += 1
    stats.notes.extend(row_notes(examples, skipped, config))
    torn = store.torn_report()
    if torn:
        stats.notes.append(torn)
    started = time.perf_counter()
    # Identical requests (a repeated input) are paid for once: run one call per key, share its entry.
    unique = {c.key: c for c in calls if not c.cached}
    report = None
    try:
        if config.batch and unique:
            from .batch import run_batches

            with store:
                report = asyncio.run(run_batches(list(unique.values()), store, config, stats, progress))
            stats.notes.extend(batch_notes(report, stats))
            if config.workers > 1:
                stats.notes.append("--workers is not used with --batch: one process submits, polls and collects")
        elif config.workers > 1 and len(unique) > config.workers:
            from .workers import run_in_workers

            run_in_workers(list(unique.values()), store, config, stats, progress)
        else:
            with store:
                asyncio.run(run_calls(list(unique.values()), store, config, stats, progress))
    finally:
        stats.wall_s = round(time.perf_counter() - started, 3)
    if report is not None and (report.open or report.queued):  # --no-wait: the same command collects (and submits) later
        return Result(records=[], stats=stats, batches=report)
    for call in calls:
        if call.key in unique and unique[call.key] is not call:
            call.entry = unique[call.key].entry

    # What each record says about its prompt: identity, sampling params, and how the student's input was made.
    prompt_info = {**spec.identity(), "answer_type_source": answer_type_source, "params": sampling_params(spec, config),
                   "template": spec.template, "input_field": config.input_field, "format": spec.format,
                   "answer_marker": spec.answer_marker}  # fmt: skip
    records = assemble(spec, examples, calls, stats, plugins.parsers, prompt_info)
    out = None
    done = [r for r in records if not any(s.error_kind == "budget" for s in r.samples)]  # budget-skipped: not written
    stats.failed_inputs = sum(1 for r in done if any(s.error for s in r.samples))
    if config.out:
        out = Path(config.out)
        write_jsonl(out, done)
        listed = skipped_path(out)
        if skipped:
            write_jsonl(listed, [{"where": where, "reason": reason} for where, reason in skipped])
        elif listed.exists():
            listed.unlink()  # a list from an earlier run no longer says the truth
    if len(done) < len(records):
        raise BudgetExceeded(
            f"--max-cost {config.max_cost} reached (spent ${stats.cost:.4f}): {len(done)} of "
            f"{len(records)} inputs done{f' and written to {out}' if out else ''}; paid calls are cached, "
            "re-run with a higher --max-cost to finish"
        )
    return Result(records=records, stats=stats, out=out, batches=report)


def batch_notes(report, stats: Stats) -> list[str]:
    notes = [f"batch mode: {report.submitted_now} batch{'es' * (report.submitted_now != 1)} submitted by this run "
             f"({report.requests_now} requests); {len(report.batches)} journaled in {report.journal}"]  # fmt: skip
    if report.priced:
        notes.append(f"{report.priced} requests collected at the batch price: ${report.priced_cost:.4f}; the same tokens online: "
                     f"${report.online_cost:.4f}")  # fmt: skip
    return notes


def check_failures(result: Result, config: GenerateConfig) -> None:
    """Raise CompletedWithFailures (exit 4) when more inputs failed than --allow-failures allows."""
    stats = result.stats
    allowed = config.allow_failures * stats.inputs if 0 < config.allow_failures < 1 else config.allow_failures
    if stats.failed_inputs > allowed:
        kinds = ", ".join(f"{n} {k}" for k, n in stats.failures.most_common()) or "see the records"
        where = f"; the records in {result.out} say which and why" if result.out else ""
        raise CompletedWithFailures(
            f"completed with failures: {stats.failed_inputs} of {stats.inputs} inputs have failed calls ({kinds}){where}; "
            "a re-run retries transient failures, --retry-failed resends permanent ones, --allow-failures N accepts them"
        )


def resolve_teacher(plugins, value, config: GenerateConfig) -> Teacher:
    """A Teacher object, a registered name, ``NAME:MODEL``, or a bare LiteLLM model string."""
    if isinstance(value, Teacher):
        return value
    options = {"api_base": config.api_base, "price": parse_price(config.price)}
    if config.api_key_env:
        options["api_key_env"] = config.api_key_env
    name, _, model = value.partition(":") if ":" in value and value.split(":", 1)[0] in plugins.teachers else (value, "", "")
    if name in plugins.teachers:
        factory, model = plugins.teachers.get(name), model or None
    elif "/" in value:
        factory, model = plugins.teachers.get("litellm"), value
    else:
        known = ", ".join(plugins.teachers.names())
        raise PluginError(f"--teacher {value!r}: unknown teacher (registered: {known}; or a LiteLLM model string such as openai/gpt-4o-mini)")
    try:
        return factory(model=model, **options)
    except TypeError as exc:
        raise PluginError(f"--teacher {value!r}: the teacher factory rejected its options: {exc}") from None


def sampling_params(spec: PromptSpec, config: GenerateConfig) -> dict:
    params = dict(spec.params)
    if config.temperature is not None:
        params["temperature"] = config.temperature
    params.setdefault("temperature", 0.7 if config.samples > 1 else 0.0)
    if config.max_tokens is not None:
        params["max_tokens"] = config.max_tokens
    if spec.stop:
        params["stop"] = list(spec.stop)
    return params


def plan_calls(spec: PromptSpec, config: GenerateConfig, teachers: list[Teacher], examples: list[Example]) -> list[Call]:
    params = sampling_params(spec, config)
    calls = []
    for i, ex in enumerate(examples):
        for teacher in teachers:
            # Native n: one request returns every sample. Otherwise one seeded request per sample.
            groups = [(0, config.samples)] if teacher.native_n and config.samples > 1 else [(s, 1) for s in range(config.samples)]
            for first, n in groups:
                request = Request(messages=ex.messages, inputs=ex.fields, n=n, seed=config.seed + first, params=params,
                                  timeout=config.timeout, logprobs=config.logprobs, format=spec.format)  # fmt: skip
                calls.append(Call(call_key(teacher, request), teacher, request, i, first))
    return calls


# --- records ----------------------------------------------------------------------------------------


def assemble(spec: PromptSpec, examples: list[Example], calls: list[Call], stats: Stats, parsers, prompt_info: dict) -> list[TeacherRecord]:
    by_row: dict[int, list[Call]] = {}
    for call in calls:
        by_row.setdefault(call.row_index, []).append(call)
    records = []
    for i, ex in enumerate(examples):
        samples = []
        for call in by_row.get(i, []):
            parser = parsers.get(call.teacher.parser or spec.parser)
            samples.extend(samples_from(call, spec, parser, stats))
        record = TeacherRecord(id=ex.id, row=ex.row, input="\n\n".join(p.text for p in ex.parts if p.part == "input"),
                               label=ex.label, prompt=prompt_info, messages=ex.messages, parts=ex.parts,
                               samples=samples)  # fmt: skip
        record.vote()
        records.append(record)
    return records


def samples_from(call: Call, spec: PromptSpec, parser, stats: Stats) -> list[Sample]:
    entry = call.entry or {"ok": False, "error": "not run", "kind": "stopped"}
    n = call.request.n
    if not entry.get("ok"):
        kind = entry.get("kind") or "error"
        return [Sample(teacher=call.teacher.name, index=call.first_sample + k, error=entry.get("error"), error_kind=kind)
                for k in range(n)]  # fmt: skip
    usage = entry.get("usage") or {}
    stats.prompt_tokens += usage.get("prompt_tokens", 0)
    stats.completion_tokens += usage.get("completion_tokens", 0)
    if entry.get("cost") is None:
        stats.cost_unknown += 1
    choices = entry["choices"]
    out = []
    for k, choice in enumerate(choices[:n]):
        sample = Sample(teacher=call.teacher.name, index=call.first_sample + k, text=choice["text"],
                        usage=usage if k == 0 else {}, cost=(entry.get("cost") or 0.0) if k == 0 else 0.0,
                        latency_s=entry.get("latency_s", 0.0), cached=call.cached,
                        finish_reason=choice.get("finish_reason"))  # fmt: skip
        try:
            sample.rationale, sample.raw_answer, sample.answer = parse_sample(parser, choice["text"], spec, choice.get("fields"))
            marker = spec.answer_marker if spec.parser == "answer-marker" else None
            if sample.finish_reason == "length" and marker and marker.lower() not in (choice["text"] or "").lower():
                # a reply cut before its answer marker: whatever a fallback read in the fragment is not its answer
                sample.rationale = sample.raw_answer = sample.answer = None
                raise ParseFailure(f"no answer marker {marker!r} in the part that was written")
        except ParseFailure as exc:
            sample.parse_error = str(exc)
            if sample.finish_reason == "length":
                sample.parse_error = f"cut at max_tokens before the answer ({exc})"
            stats.parse_failures += 1
        stats.truncated += sample.finish_reason == "length"
        if choice.get("logprobs") and sample.raw_answer:
            sample.logprobs = answer_logprobs(choice["logprobs"], choice["text"], sample.raw_answer)
        out.append(sample)
    for k in range(len(choices), n):  # the server returned fewer choices than asked for
        out.append(Sample(teacher=call.teacher.name, index=call.first_sample + k, error_kind="short_reply",
                          error=f"the provider returned {len(choices)} of {n} choices"))  # fmt: skip
    stats.samples += len(out)
    return out


def answer_logprobs(logprobs: list[dict], text: str, answer: str) -> list[dict] | None:
    """The logprob entries of the tokens that spell the answer (its last occurrence in the text)."""
    start = text.rfind(answer)
    if start < 0:
        return None
    end, pos, kept = start + len(answer), 0, []
    for entry in logprobs:
        token_end = pos + len(entry["token"])
        if token_end > start and pos < end:
            kept.append(entry)
        pos = token_end
    return kept or None


EXACT_COUNTS = 2000  # prompts per teacher a dry run counts with the teacher's tokenizer; the rest are scaled by length


def estimate(spec: PromptSpec, config: GenerateConfig, calls: list[Call]) -> DryRun:
    """Count calls and tokens and price them, calling nothing. Up to EXACT_COUNTS distinct prompts per teacher are
    counted with its tokenizer (about 0.1 ms each through LiteLLM); beyond that, an evenly spaced EXACT_COUNTS of them
    are, and the others get their length times the tokens per character measured on those, so a dry run over
    100,000 inputs takes seconds."""
    todo = [c for c in calls if not c.cached]
    demo_tokens = [len(spec.render_response(d["rationale"], str(d["answer"]))) // 4 for d in spec.examples]
    per_sample = config.max_tokens or (int(sum(demo_tokens) / len(demo_tokens) * 1.5) + 8 if demo_tokens else 256)
    tokens = prompt_tokens_of(todo)
    prompt_tokens = completion_tokens = 0
    cost, unknown = 0.0, False
    prices: dict[tuple, float | None] = {}  # the same token counts cost the same: one lookup each
    for call in todo:
        p, c = tokens[(call.teacher.name, call.row_index)], per_sample * call.request.n
        prompt_tokens += p
        completion_tokens += c
        if (call.teacher.name, p, c) not in prices:
            prices[(call.teacher.name, p, c)] = call.teacher.cost_of(p, c)
        price = prices[(call.teacher.name, p, c)]
        if price is None:
            unknown = True
        else:
            cost += price
    dry = DryRun(len(calls), len(calls) - len(todo), len(todo), prompt_tokens, completion_tokens, None if unknown else cost)
    if config.batch:
        from .batch import batch_cost, plan_files

        dry.batch_files = len(plan_files(list({c.key: c for c in todo}.values()), config))
        seen: dict[tuple, float | None] = {}  # the same token counts cost the same: one lookup each
        for c in todo:
            p, n = tokens[(c.teacher.name, c.row_index)], per_sample * c.request.n
            if (c.teacher.name, p, n) not in seen:
                seen[(c.teacher.name, p, n)] = batch_cost(c.teacher, p, n, config.batch_discount)
        prices = [seen[(c.teacher.name, tokens[(c.teacher.name, c.row_index)], per_sample * c.request.n)] for c in todo]
        dry.batch_cost = None if any(p is None for p in prices) else sum(prices)
    return dry


def prompt_tokens_of(calls: list[Call]) -> dict[tuple[str, int], int]:
    """(teacher name, row) -> the prompt's tokens: counted exactly for up to EXACT_COUNTS prompts per teacher, scaled
    by characters from an evenly spaced sample beyond that."""
    by_teacher: dict[str, dict[int, Call]] = {}
    for call in calls:
        by_teacher.setdefault(call.teacher.name, {}).setdefault(call.row_index, call)
    tokens: dict[tuple[str, int], int] = {}
    for name, rows in by_teacher.items():
        picked = list(rows.values())
        step = max(1, -(-len(picked) // EXACT_COUNTS))
        exact = {c.row_index: c.teacher.count_tokens(c.request.messages) for c in picked[::step]}
        counted_chars = sum(prompt_chars(rows[i].request.messages) for i in exact) or 1
        per_char = sum(exact.values()) / counted_chars
        for i, call in rows.items():
            tokens[(name, i)] = exact[i] if i in exact else round(prompt_chars(call.request.messages) * per_char)
    return tokens

