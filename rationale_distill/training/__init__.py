"""Student training: the config, the data it reads, and the dispatch to a trainer plugin.

The built-in trainer (``trl-sft``, in ``training/sft.py``) fine-tunes a causal LM with TRL's SFTTrainer on the
multi-task objective ``L = L_label + lambda * L_rationale`` (Hsieh et al. 2023) in one forward pass per batch.
Nothing here imports torch until training starts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import build, option, to_dict
from ..errors import UsageError

OBJECTIVES = ("sft", "kd", "multitask+kd")
MANIFEST = "rdistill_train.json"  # written last: its presence and hashes say the folder is one complete student
INCOMPLETE = ".rdistill-incomplete"  # present while the final save runs
CHECKPOINT_MARK = "rdistill_checkpoint.json"  # written into a checkpoint once the trainer has saved all of it


@dataclass
class TrainConfig:
    data: str = option(help="a dataset folder written by `rdistill build`", positional=True)
    student: str | None = option(None, help="the model to start from (default: the trainer's own): trl-sft takes a Hugging Face causal LM (hub id, local folder, a .gguf file, or gemma-3-270m, the embedded offline model; the default); encoder-classifier an encoder (hub id, folder, or all-minilm-l6-v2, the offline default); tfidf-logreg none")
    out: str | None = option(None, help="output folder for the trained student (loadable by transformers / peft)")
    trainer: str = option("trl-sft", help="the registered trainer plugin to use: trl-sft (a causal LM, multi-task, soft targets), encoder-classifier (an encoder with a classification head, hard or soft labels), tfidf-logreg (TF-IDF + logistic regression, the classical baseline)")
    trainer_options: dict = option(factory=dict, cli=False, help="settings of the chosen trainer's own config (its flags on the command line, e.g. --logreg-c), as a mapping in YAML")
    rationale_weight: float = option(1.0, help="lambda in L = L_label + lambda * L_rationale (1: the best weight "
                                     "measured with right rationales; 0.25 is safer when the teacher's rationales are often wrong)", ge=0)
    rationale_schedule: str = option("constant", help="lambda over training: constant, linear-decay (lambda * (1 - progress)) or cosine-decay (lambda * (1 + cos(pi * progress)) / 2)", choices=("constant", "linear-decay", "cosine-decay"))
    objective: str = option("sft", help="sft: cross-entropy on the teacher's text (multi-task with rationale data); kd: alpha * hard-label CE + (1 - alpha) * T^2 * soft-target divergence; multitask+kd: L_label + lambda * L_rationale + kd_weight * T^2 * L_KD", choices=OBJECTIVES)
    kd_source: str = option("teacher", help="where the soft targets come from (a registered source): teacher (a white-box LM, --teacher-model, read in each step), teacher-topk (the same, read once before training and kept as its top --kd-top-k per token), logprobs (the API teacher's top-K logprobs in the records), votes (the share of each answer in the teacher's samples)")
    teacher_model: str | None = option(None, help="--kd-source teacher: the teacher LM (hub id, folder, .gguf, or gemma-3-270m); it must share the student's tokenizer")
    teacher_device: str | None = option(None, help="--kd-source teacher: run the teacher on this device (default: the student's)", pattern=(r"cpu|cuda(:\d+)?", "cpu, cuda or cuda:N"))
    teacher_8bit: bool = option(False, help="--kd-source teacher/teacher-topk: load the teacher in 8 bits (bitsandbytes, CUDA only) to fit a bigger one beside the student")
    kd_temperature: float = option(2.0, help="softmax temperature of the soft targets (the KD term is scaled by T^2)", gt=0)
    kd_alpha: float = option(0.5, help="--objective kd: weight of the hard-label cross-entropy; the soft term gets 1 - alpha", ge=0, le=1)
    kd_weight: float = option(0.5, help="--objective multitask+kd: weight of the soft-target term", ge=0)
    kd_divergence: str = option("forward_kl", help="forward_kl (Hinton), reverse_kl (mode seeking, MiniLLM) or jsd (generalised JSD, --kd-beta)", choices=("forward_kl", "reverse_kl", "jsd"))
    kd_beta: float = option(0.5, help="--kd-divergence jsd: the mixture weight of the teacher", gt=0, lt=1)
    kd_top_k: int = option(20, help="--kd-source logprobs, teacher-topk: top-K alternatives kept per token", ge=1)
    kd_on_policy: float = option(0.0, help="--kd-source teacher: the share of training batches whose completions the student samples itself and the teacher scores (on-policy distillation, GKD's lambda); 0 keeps to the dataset's completions", ge=0, le=1)
    kd_teacher_max_length: int = option(2048, help="--kd-source teacher: tokens of the teacher's (engineered) prompt plus completion; longer prompts are cut from the left", ge=16)
    student_keep_every: int = option(1, help="initialise a smaller student from --student by keeping every k-th decoder layer (DistilBERT-style); 1 keeps all", ge=1)
    lora: bool = option(False, help="train a LoRA adapter (PEFT) instead of every weight")
    lora_r: int = option(16, help="LoRA rank", ge=1)
    lora_alpha: int = option(32, help="LoRA alpha", gt=0)
    lora_dropout: float = option(0.05, help="LoRA dropout", ge=0, lt=1)
    lora_target_modules: str = option("all-linear", help="modules LoRA adapts: all-linear or a comma list (q_proj,v_proj)")
    qlora: bool = option(False, help="load the base model in 4 bits (bitsandbytes, CUDA only) and train LoRA on it")
    merge_adapter: bool = option(False, help="merge the LoRA adapter into the base weights when saving")
    epochs: float = option(3.0, help="training epochs", gt=0)
    max_steps: int = option(-1, help="stop after this many optimizer steps (overrides --epochs when > 0)", ge=-1)
    learning_rate: float | None = option(None, help="peak learning rate (default: 2e-4 with LoRA, 5e-5 without)", gt=0, lt=1)
    batch_size: int = option(8, help="examples per device per step", ge=1)
    grad_accum: int = option(1, help="gradient accumulation steps", ge=1)
    max_length: int = option(512, help="tokens per example; longer prompts are cut from the left", ge=16)
    warmup_ratio: float = option(0.0, help="fraction of steps for learning-rate warm-up", ge=0, lt=1)
    weight_decay: float = option(0.0, help="AdamW weight decay", ge=0)
    lr_scheduler: str = option("linear", help="learning-rate schedule (transformers name: linear, cosine, constant, ...)")
    seed: int = option(0, help="seed for weights init of adapters, data order and dropout", ge=0)
    device: str = option("auto", help="auto (CUDA when present), cuda or cpu", pattern=(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"))
    bf16: bool | None = option(None, help="bf16 mixed precision (default: on with a CUDA GPU that supports it, off on CPU)")
    gradient_checkpointing: bool | None = option(None, help="trade compute for memory (default: on with a GPU, off on CPU)")
    logging_steps: int = option(10, help="log every N steps", ge=1)
    save_strategy: str = option("epoch", help="when to checkpoint: epoch, steps or no", choices=("epoch", "steps", "no"))
    save_steps: int = option(500, help="with --save-strategy steps: checkpoint every N steps", ge=1)
    save_total_limit: int = option(2, help="checkpoints kept", ge=1)
    resume: bool = option(False, help="resume from the last checkpoint in OUT/checkpoints")
    eval_split: str | None = option("validation", help="split to report validation loss on each epoch (none to skip)")


def load_split_rows(data: str | Path) -> tuple[dict, dict]:
    """(splits: name -> list of rows, build report) from a folder written by `rdistill build`."""
    folder = Path(data)
    if not (folder / "build.json").is_file():
        raise UsageError(f"{folder}: not a dataset folder (no build.json); run `rdistill build ... --out {folder}` first")
    report = json.loads((folder / "build.json").read_text())
    splits = {}
    for split in ("train", "validation", "test"):
        path = folder / f"{split}.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if rows:
                splits[split] = rows
    if "train" not in splits:
        raise UsageError(f"{folder}: the train split is empty")
    return splits, report


# --- what a training output and a checkpoint are, and when they may be trusted -------------------------------------

# Settings that change what is trained. Logging, saving and where the files go do not.
NOT_TRAINING = ("out", "resume", "logging_steps", "save_strategy", "save_steps", "save_total_limit", "eval_split", "device")
LENGTH = ("epochs", "max_steps")  # how long to train: --resume may extend a run


def data_digest(data: str | Path) -> str:
    path = Path(data) / "train.jsonl"
    return file_digest(path) if path.is_file() else "missing"


def fingerprint(config: TrainConfig, also_ignore: tuple = ()) -> str:
    """A hash of the settings that shape the student and of the training data: equal means the same training run.
    A resumed run may go on for longer (``also_ignore=LENGTH``) and still be the same run."""
    settings = {k: v for k, v in to_dict(config).items() if k not in NOT_TRAINING + also_ignore}
    return hashlib.sha256(json.dumps([settings, data_digest(config.data)], sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def begin_output(out: Path) -> None:
    """Before the final save: mark the folder incomplete, then drop the old manifest and the old student's files,
    so a kill while saving can never leave new weights beside an old manifest (or old weights beside a new one)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE).write_text(f"pid {os.getpid()}: the final save of a training run is in progress\n")
    old = out / MANIFEST
    if old.is_file():
        try:
            listed = json.loads(old.read_text()).get("files", {})
        except ValueError:
            listed = {}
        old.unlink()
        for name in listed:
            if "/" not in name and (out / name).is_file():
                (out / name).unlink()


def finish_output(out: Path, meta: dict) -> None:
    """After the final save: hash every file, write the manifest atomically, then clear the incomplete mark."""
    skip = {MANIFEST, INCOMPLETE, "README.md"}  # the model card: `rdistill eval` adds its results to it
    meta["files"] = {p.name: file_digest(p) for p in sorted(out.iterdir()) if p.is_file() and p.name not in skip}
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, out / MANIFEST)
    (out / INCOMPLETE).unlink(missing_ok=True)


def read_student(folder: str | Path, verify: bool = False) -> dict:
    """The manifest of a complete student folder; a one-line UsageError for anything else. ``verify`` re-hashes
    every file it lists (the pipeline does before reusing a student)."""
    folder = Path(folder)
    if (folder / INCOMPLETE).exists():
        raise UsageError(f"{folder}: the training run that writes this folder did not finish saving (killed?); "
                         "train again into it, or pass another folder")  # fmt: skip
    path = folder / MANIFEST
    if not path.is_file():
        raise UsageError(f"{folder}: not a student folder written by `rdistill train` (no {MANIFEST})")
    meta = json.loads(path.read_text())
    if verify:
        for name, digest in meta.get("files", {}).items():
            if not (folder / name).is_file() or file_digest(folder / name) != digest:
                raise UsageError(f"{folder}: {name} is missing or changed since training; train again into it")
    return meta


def pick_checkpoint(checkpoints: Path, config: TrainConfig) -> tuple[Path, list[str]]:
    """(the newest complete checkpoint of this very run, notes on the ones passed over). A checkpoint is complete
    once the trainer has written all of it and then our mark; the mark holds the run's fingerprint, so a checkpoint
    of another configuration or other data is refused rather than silently continued."""
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else -1)
    notes = []
    for path in reversed(found):
        mark = path / CHECKPOINT_MARK
        if not mark.is_file():
            notes.append(f"{path.name} is incomplete (killed while saving?), passed over")
            continue
        theirs = json.loads(mark.read_text()).get("fingerprint")
        if theirs != fingerprint(config, LENGTH):
            raise UsageError(f"--resume: {path} belongs to another run (different settings or training data); "
                             "resume with the same settings, or train into another --out")  # fmt: skip
        return path, notes
    raise UsageError(f"--resume: no complete checkpoint in {checkpoints}" + (f" ({'; '.join(notes)})" if notes else ""))


def train(config: TrainConfig, plugins=None) -> Path:
    """Train a student with the configured trainer plugin; returns the output folder."""
    from ..plugins import load_plugins

    if not config.out:
        raise UsageError("--out is required (the folder to write the student to)")
    if config.rationale_weight < 0:
        raise UsageError("--rationale-weight must be >= 0")
    plugins = plugins or load_plugins()
    config = resolve(config, plugins)
    entry = plugins.trainers.entry(config.trainer)
    trainer, kwargs = entry.obj, {}
    accepts = inspect.signature(trainer).parameters
    if "plugins" in accepts:  # e.g. to find a third-party source of soft targets
        kwargs["plugins"] = plugins
    settings_cls = entry.options.get("config")
    if settings_cls is not None:  # the trainer's own settings, checked like any other config
        kwargs["settings"] = build(settings_cls, config.trainer_options, f"train: trainer_options of --trainer {config.trainer}")
    elif config.trainer_options:
        raise UsageError(f"trainer_options {sorted(config.trainer_options)}: --trainer {config.trainer} takes no options of its own")
    return Path(trainer(config, **kwargs))


def resolve(config: TrainConfig, plugins) -> TrainConfig:
    """The config with the trainer's default student filled in (what is trained, and fingerprinted)."""
    if config.student is not None:
        return config
    from dataclasses import replace

    default = plugins.trainers.entry(config.trainer).options.get("default_student")
    if default is None:
        raise UsageError(f"--student is required with --trainer {config.trainer}")
    return replace(config, student=default)


def objective_line(c: dict, mode: str) -> str:
    """What the student was trained on, in words, for the model card."""
    soft = f"soft targets: {kd_summary(c)}" if c.get("objective", "sft") != "sft" else ""
    if mode != "rationale" or c.get("objective") == "kd":
        return soft or "cross-entropy on the completion tokens"
    schedule = f" ({c['rationale_schedule']})" if c.get("rationale_schedule", "constant") != "constant" else ""
    return f"L = L_label + {c['rationale_weight']} x L_rationale{schedule}, one forward pass per batch" + (f"; plus {soft}" if soft else "")


def kd_summary(c: dict) -> str:
    """'kd from teacher gemma-3-270m, forward_kl, T 2.0, alpha 0.5' for the model card."""
    who = {"teacher": f"teacher {c.get('teacher_model')}", "teacher-topk": f"teacher {c.get('teacher_model')} (top {c.get('kd_top_k')})",
           "logprobs": f"the API teacher's top-{c.get('kd_top_k')} logprobs", "votes": "the teacher's votes"}.get(c["kd_source"], c["kd_source"])  # fmt: skip
    weight = f"alpha {c['kd_alpha']}" if c["objective"] == "kd" else f"kd weight {c['kd_weight']}"
    policy = f", on-policy share {c['kd_on_policy']}" if c.get("kd_on_policy") else ""
    return f"{c['objective']} from {who}, {c['kd_divergence']}, T {c['kd_temperature']}, {weight}{policy}"


def eval_summary(meta: dict) -> str | None:
    """'total 1.234, label 0.456, rationale 2.345' from the last evaluation in the log, per task of the objective."""
    evals = [h for h in meta["log_history"] if "eval_loss" in h]
    if not evals:
        return None
    last = evals[-1]
    parts = [f"total {last['eval_loss']:.4f}"] + [f"{task} {last[f'eval_loss_{task}']:.4f}" for task in ("label", "rationale") if f"eval_loss_{task}" in last]
    return ", ".join(parts) + f" (epoch {last.get('epoch', 0):g})"


def fit_summary(fit: dict) -> str:
    """'118 of 120 rows; dropped (completion too long): rationale 2; prompts cut from the left (BOS kept): 5'."""
    dropped = ", ".join(f"{task} {n}" for task, n in sorted(fit["dropped"].items())) or "none"
    return f"{fit['kept']} of {fit['rows']} rows; dropped (completion too long): {dropped}; prompts cut from the left (BOS kept): {fit['prompts_cut']}"


def model_card(meta: dict, evaluation: str | None = None) -> str:
    """The student's README.md: base, teacher, data, objective, training, and evaluation once there is one."""
    c, d = meta["config"], meta["dataset"]
    if meta.get("student_kind") == "classifier":
        return classifier_card(meta, evaluation)
    losses = [h["loss"] for h in meta["log_history"] if "loss" in h]
    lines = [
        "# Student distilled with rationale-distill", "",
        f"- Base model: `{c['student']}`" + (" with a LoRA adapter" + (" (merged)" if c["merge_adapter"] else "") if c["lora"] or c["qlora"] else " (full fine-tuning)"),
        "- Teacher(s): " + ", ".join(f"`{t}`" for t in d.get("teachers", [])) + "; prompt(s): " + ", ".join(f"`{p['name']}`" for p in d.get("prompts", [])),
        f"- Data: `{c['data']}`, mode **{d['config']['mode']}**, label source **{d['config']['label_source']}**, "
        f"{d['examples_kept']} examples, rows {json.dumps(d['rows'], sort_keys=True)}",
        "- Objective: " + objective_line(c, d["config"]["mode"]),
        f"- Training: {c['epochs']} epochs (max_steps {c['max_steps']}), lr {meta['learning_rate']}, batch {c['batch_size']} x {c['grad_accum']}, "
        f"device {meta['device']}, bf16 {meta['bf16']}, {meta['train_runtime_s'] or 0:.1f} s",
        f"- Parameters: {meta['parameters']:,} ({meta['trainable_parameters']:,} trained)",
        f"- Loss: {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "- Loss: not logged",
        *([f"- Validation loss (last evaluation): {validation}"] if (validation := eval_summary(meta)) else []),
        *[f"- Rows that fit (max_length {f['max_length']}), {split}: {fit_summary(f)}" for split, f in meta.get("fit", {}).items()], "",
        "At inference the student answers from the label prefix alone; it does not generate a rationale.", "",
    ]  # fmt: skip
    return card_end(lines, meta, evaluation)


def classifier_card(meta: dict, evaluation: str | None = None) -> str:
    """The README.md of an encoder-classifier or tfidf-logreg student."""
    c, d, data = meta["config"], meta["dataset"], meta["data"]
    soft = data.get("soft_labels") or {}
    target = ("hard labels" if c["objective"] == "sft" else
              f"soft labels from the teacher's {c['kd_source']} (T {c['kd_temperature']}, alpha {c['kd_alpha']} on the hard label); "
              f"rows: {json.dumps(soft, sort_keys=True)}")  # fmt: skip
    lines = [
        f"# Classifier distilled with rationale-distill (`{c['trainer']}`)", "",
        f"- Model: {meta['student_base']}" + (" + LoRA (merged)" if c.get("lora") and c["trainer"] == "encoder-classifier" else ""),
        "- Teacher(s): " + ", ".join(f"`{t}`" for t in d.get("teachers", [])),
        f"- Data: `{c['data']}`, rows {json.dumps(data['rows'], sort_keys=True)}",
        f"- Classes ({len(meta['classes'])}): " + ", ".join(f"`{x}`" for x in meta["classes"]),
        f"- Trained on: {target}",
        f"- Settings: {json.dumps(meta.get('trainer_settings', {}), sort_keys=True)}; device {meta['device']}, {meta['train_runtime_s']:.1f} s",
        f"- Parameters: {meta['parameters']:,} ({meta['trainable_parameters']:,} trained)", "",
        "The student maps the bare input to one class; it writes no rationale.", "",
    ]  # fmt: skip
    return card_end(lines, meta, evaluation)


def card_end(lines: list[str], meta: dict, evaluation: str | None) -> str:
    """A model card's versions line and, once `rdistill eval` has run, its results."""
    lines = lines + ["Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    if evaluation:
        lines += ["## Evaluation", "", evaluation, ""]
    return "\n".join(lines)
