"""Student training: the config, the data it reads, and the dispatch to a trainer plugin.

The built-in trainer (``trl-sft``, in ``trl_trainer.py``) fine-tunes a causal LM with TRL's SFTTrainer on the
multi-task objective ``L = L_label + lambda * L_rationale`` (Hsieh et al. 2023) in one forward pass per batch.
Nothing here imports torch until training starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .config import option
from .errors import UsageError


@dataclass
class TrainConfig:
    data: str = option(help="a dataset folder written by `rdistill build`", positional=True)
    student: str = option("gemma-3-270m", help="a Hugging Face causal LM: hub id, local folder, a .gguf file, or gemma-3-270m (the embedded offline model)")
    out: str | None = option(None, help="output folder for the trained student (loadable by transformers / peft)")
    trainer: str = option("trl-sft", help="the registered trainer plugin to use")
    rationale_weight: float = option(1.0, help="lambda in L = L_label + lambda * L_rationale", ge=0)
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
    padding_free: bool = option(False, help="GPU: pack each batch without padding (flash-attention models)")
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


def train(config: TrainConfig, plugins=None) -> Path:
    """Train a student with the configured trainer plugin; returns the output folder."""
    from .plugins import load_plugins

    if not config.out:
        raise UsageError("--out is required (the folder to write the student to)")
    if config.rationale_weight < 0:
        raise UsageError("--rationale-weight must be >= 0")
    plugins = plugins or load_plugins()
    trainer = plugins.trainers.get(config.trainer)
    return Path(trainer(config))


def model_card(meta: dict, evaluation: str | None = None) -> str:
    """The student's README.md: base, teacher, data, objective, training, and evaluation once there is one."""
    c, d = meta["config"], meta["dataset"]
    losses = [h["loss"] for h in meta["log_history"] if "loss" in h]
    lines = [
        "# Student distilled with rationale-distill", "",
        f"- Base model: `{c['student']}`" + (" with a LoRA adapter" + (" (merged)" if c["merge_adapter"] else "") if c["lora"] or c["qlora"] else " (full fine-tuning)"),
        "- Teacher(s): " + ", ".join(f"`{t}`" for t in d.get("teachers", [])) + "; prompt(s): " + ", ".join(f"`{p['name']}`" for p in d.get("prompts", [])),
        f"- Data: `{c['data']}`, mode **{d['config']['mode']}**, label source **{d['config']['label_source']}**, "
        f"{d['examples_kept']} examples, rows {json.dumps(d['rows'], sort_keys=True)}",
        f"- Objective: L = L_label + {c['rationale_weight']} x L_rationale, one forward pass per batch" if d["config"]["mode"] == "rationale"
        else "- Objective: cross-entropy on the completion tokens",
        f"- Training: {c['epochs']} epochs (max_steps {c['max_steps']}), lr {meta['learning_rate']}, batch {c['batch_size']} x {c['grad_accum']}, "
        f"device {meta['device']}, bf16 {meta['bf16']}, {meta['train_runtime_s'] or 0:.1f} s",
        f"- Parameters: {meta['parameters']:,} ({meta['trainable_parameters']:,} trained)",
        f"- Loss: {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "- Loss: not logged", "",
        "At inference the student answers from the label prefix alone; it does not generate a rationale.", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "",
    ]  # fmt: skip
    if evaluation:
        lines += ["## Evaluation", "", evaluation, ""]
    return "\n".join(lines)
