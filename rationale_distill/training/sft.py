"""The built-in student trainer: TRL's SFTTrainer on the multi-task objective, in one forward pass per batch.

    L = L_label + lambda * L_rationale                                  (Hsieh et al. 2023, "Distilling Step-by-Step")

google-research/distilling-step-by-step runs the label rows and the rationale rows through the model in two
forward passes. Here both kinds of rows share one batch: one forward pass gives per-token cross-entropy, and each
task's loss is the sum over its own completion tokens divided by that task's completion-token count over the
whole gradient-accumulation window (and over every process), so the result does not depend on how rows fall into
micro-batches, and a batch with no rationale rows contributes zero to that term (no division by zero).

Read top to bottom: tokenize -> trainer -> train(); the batches and the loss are in multitask.py.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import sys
from pathlib import Path

import torch

from ..config import to_dict
from ..errors import PluginError, UsageError
from ..student import load_model, parameter_count, pick_device
from . import (CHECKPOINT_MARK, LENGTH, TrainConfig, begin_output, finish_output, fingerprint, load_split_rows,
                       model_card, pick_checkpoint)
from .multitask import MultiTaskCollator, batch_counts, completion_positions, head_takes_a_mask, multitask_loss, rows_at, schedule

TASK_IDS = {"label": 0, "context": 0, "single": 0, "rationale": 1, "soft": 2}  # answer, rationale, soft answer (votes)


# --- tokenize: rows -> input_ids, labels (prompt masked with -100), task_id -----------------------------------


def tokenize_row(row: dict, tokenizer, max_length: int) -> dict | None:
    """input_ids, labels and task_id of one row; None when the completion does not fit with a minimum prompt.

    The completion (with EOS) is never cut: a target cut short teaches the student to stop mid-answer, or never to
    stop. A long prompt is cut from the left (its end, next to the answer, matters most) but keeps its BOS token and
    at least ``min_prompt_tokens(max_length)`` tokens; a row that cannot keep that much is dropped and counted."""
    if "messages" in row:
        prompt_text, completion_text = _chat_split(row["messages"], tokenizer)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]  # with BOS where the tokenizer adds one
        completion_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and (not completion_ids or completion_ids[-1] != tokenizer.eos_token_id):
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    cut = False
    if len(prompt_ids) + len(completion_ids) > max_length:
        budget = max_length - len(completion_ids)
        if budget < min(min_prompt_tokens(max_length), len(prompt_ids)):
            return None
        bos = tokenizer.bos_token_id
        head = prompt_ids[:1] if bos is not None and prompt_ids and prompt_ids[0] == bos else []
        prompt_ids = head + prompt_ids[len(prompt_ids) - (budget - len(head)) :]
        cut = True
    return {"input_ids": prompt_ids + completion_ids, "labels": [-100] * len(prompt_ids) + completion_ids,
            "task_id": TASK_IDS.get(row.get("task", "label"), 0), "prompt_cut": cut, "prompt_len": len(prompt_ids)}  # fmt: skip


def min_prompt_tokens(max_length: int) -> int:
    """The fewest prompt tokens a row keeps: a quarter of the window, at most 64 (a question cut to nothing teaches
    the student to answer without reading it)."""
    return min(64, max_length // 4)


def tokenize_rows(rows: list[dict], tokenizer, max_length: int, soft=None) -> tuple[list[dict], dict]:
    """(tokenized rows that fit, counts: rows, dropped by task, prompts cut from the left). With a soft-target
    source, each row also gets its ``kd_mask`` and the source's fields."""
    kept, dropped, cut = [], {}, 0
    for row in rows:
        item = tokenize_row(row, tokenizer, max_length)
        if item is None:
            task = row.get("task", "label")
            dropped[task] = dropped.get(task, 0) + 1
            continue
        cut += item.pop("prompt_cut")
        prompt_len = item.pop("prompt_len")
        if soft is not None:
            item.update(soft.features(row, item, prompt_len))
        kept.append(item)
    return kept, {"rows": len(rows), "kept": len(kept), "dropped": dropped, "prompts_cut": cut, "max_length": max_length}


def _chat_split(messages: list[dict], tokenizer) -> tuple[str, str]:
    """The chat template applied at training time: (everything up to the assistant turn, the assistant turn)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("the student's tokenizer has no chat template, so `messages` data cannot be rendered: "
                         "build with --format prompt-completion, or use a chat (instruct) student")  # fmt: skip
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt) or len(full) == len(prompt):
        raise UsageError("the student's chat template cannot mark the assistant turn (the rendered conversation does "
                         "not extend the rendered prompt): build with --format prompt-completion")  # fmt: skip
    return prompt, full[len(prompt) :]


# --- trainer ---------------------------------------------------------------------------------------------------


def make_trainer_class():
    from trl import SFTTrainer

    class MultiTaskSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is w_label L_label + lambda L_rationale (+ w_kd T^2 L_KD with soft targets), each
        term averaged over its own completion tokens (soft-target mass) in the accumulation window."""

        def __init__(self, *args, rationale_weight: float = 1.0, task_weights=None, soft=None, kd_weight: float = 0.0,
                     rationale_schedule: str = "constant", **kwargs):  # fmt: skip
            super().__init__(*args, **kwargs)
            self.task_weights = tuple(task_weights) if task_weights else (1.0, rationale_weight)
            self.rationale_schedule = rationale_schedule
            self.soft, self.kd_weight = soft, kd_weight
            self._rng = random.Random(self.args.seed)  # which batches are on-policy: seeded, like everything else
            self.loss_is_scaled_for_ga = True  # our counts span the accumulation window: no extra division
            self._window_counts = None
            self._head_takes_a_mask = None  # probed on the first loss

        def _forward(self, model, inputs: dict, capture: bool, kept=None):
            """(outputs, what the LM head read: the student's side of the chunked divergence, when ``capture``); with a
            (B, T) mask ``kept`` the head runs at those positions only ((N, V) logits, (N, H) hidden states)."""
            if kept is not None:
                inputs = {**inputs, "logits_to_keep": kept}
            hidden = {}
            hook = None
            if capture:
                head = self.accelerator.unwrap_model(model).get_output_embeddings()
                hook = head.register_forward_hook(lambda module, args, out: hidden.__setitem__("h", args[0]))
            try:
                return model(**inputs, use_cache=False), hidden.get("h")
            finally:
                if hook is not None:
                    hook.remove()

        def _soft_term(self, model, inputs, labels, extra, kd_mask, hidden, logits, kept, mode):
            """The sum of the weighted divergences at this micro-batch's soft-target positions (before T^2 and the
            window's normaliser). ``hidden`` and ``logits`` are what the model's head read and wrote: at every
            position, or at ``kept`` only; the source gets them at its target positions. On an on-policy batch (GKD)
            they are taken on completions the student samples now, scored by the teacher, and their mean stands in
            for this micro-batch's share of the soft-target mass."""
            unwrapped = self.accelerator.unwrap_model(model)
            policy = self.soft.settings.on_policy if model.training else 0.0
            if policy and self._rng.random() < policy:
                batch = self.data_collator(self.soft.sample_from_student(unwrapped, inputs, extra, kd_mask))
                batch = {k: v.to(kd_mask.device) for k, v in batch.items()}
                s_inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
                s_extra, s_mask = {k: batch[k] for k in self.soft.fields}, batch["kd_mask"]
                at = s_mask > 0
                s_kept = at if self._masked_head(model) else None
                s_out, s_hidden = self._forward(model, s_inputs, capture=True, kept=s_kept)
                per_token = self._per_token(unwrapped, s_inputs, s_extra, s_mask, rows_at(s_hidden, s_kept, at), rows_at(s_out.logits, s_kept, at))
                self._metrics[mode]["on_policy"].append(1.0)
                return per_token.mean() * kd_mask.sum()
            if policy:
                self._metrics[mode]["on_policy"].append(0.0)
            at = kd_mask > 0
            per_token = self._per_token(unwrapped, {"labels": labels, **inputs}, extra, kd_mask, rows_at(hidden, kept, at), rows_at(logits, kept, at))
            return (per_token * kd_mask[at]).sum()

        def _per_token(self, model, inputs, extra, kd_mask, hidden, logits):
            """The source's divergences, checked: one per target position. A source written for full (B, T, ...)
            logits fails here in one line that says what it now gets, not deep inside torch."""
            n = int((kd_mask > 0).sum())
            hint = (f"soft targets {self.soft.name!r}: per_token gets the student's logits and hidden states at its {n} target positions "
                    "already ((N, V) and (N, H)): use them whole, and index only inputs and extra with kd_mask > 0")  # fmt: skip
            try:
                per_token = self.soft.per_token(self, model, inputs, extra, kd_mask, hidden, logits)
            except IndexError as exc:
                raise PluginError(f"{hint} ({exc})") from exc
            if tuple(per_token.shape) != (n,):
                raise PluginError(f"{hint}; it returned shape {tuple(per_token.shape)}, not ({n},)")
            return per_token

        def _masked_head(self, model) -> bool:
            if self._head_takes_a_mask is None:
                self._head_takes_a_mask = head_takes_a_mask(self.accelerator.unwrap_model(model))
            return self._head_takes_a_mask

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
            counts = sum((batch_counts(b) for b in batches), torch.zeros(3))
            counts = counts.to(device)
            if self.accelerator.num_processes > 1:
                counts = self.accelerator.gather(counts[None]).sum(dim=0)
            self._window_counts = counts
            return batches, num_items

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            training = model.training and self._window_counts is not None
            counts = self._window_counts if training else batch_counts(inputs).to(inputs["labels"].device)
            labels, task_ids = inputs.pop("labels"), inputs.pop("task_ids")
            kd_mask = inputs.pop("kd_mask", None)
            extra = {k: inputs.pop(k) for k in (self.soft.fields if self.soft else ())}
            completion = completion_positions(labels)
            kept = None  # the head at every position, or only where a loss reads it: completion and soft-target positions
            if not return_outputs and self._masked_head(model):
                kept = completion if kd_mask is None else completion | (kd_mask > 0)
            outputs, hidden = self._forward(model, inputs, capture=self.soft is not None, kept=kept)  # one pass for every task
            weights = self.task_weights
            if model.training and self.rationale_schedule != "constant" and self.state.max_steps:
                weights = (weights[0], weights[1] * schedule(self.rationale_schedule, self.state.global_step / self.state.max_steps))
            label_logits = outputs.logits if kept is None else rows_at(outputs.logits, kept, completion)
            loss, (label_loss, rationale_loss) = multitask_loss(label_logits, labels, task_ids, weights, counts[:2])
            mode = "train" if model.training else "eval"
            if self.soft is not None and kd_mask is not None and bool((kd_mask > 0).any()):
                kd_sum = self._soft_term(model, inputs, labels, extra, kd_mask, hidden, outputs.logits, kept, mode)
                scale = self.soft.settings.temperature**2 if self.soft.tempered else 1.0
                loss = loss + self.kd_weight * scale * kd_sum / counts[2].clamp(min=1e-12)
                self._metrics[mode]["loss_kd"].append((kd_sum / kd_mask.sum()).item())
            if training and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients; our counts are global
            if (task_ids == 0).any():
                self._metrics[mode]["loss_label"].append(label_loss.item())
            if (task_ids == 1).any():
                self._metrics[mode]["loss_rationale"].append(rationale_loss.item())
            return (loss, outputs) if return_outputs else loss

    return MultiTaskSFTTrainer


# --- train() ------------------------------------------------------------------------------------------------


def objective_weights(config: TrainConfig) -> tuple[tuple[float, float], float]:
    """((label weight, rationale weight), soft-target weight) of the configured objective."""
    if config.objective == "kd":
        return (config.kd_alpha, 0.0), 1.0 - config.kd_alpha
    if config.objective == "multitask+kd":
        return (1.0, config.rationale_weight), config.kd_weight
    return (1.0, config.rationale_weight), 0.0


def soft_targets(config: TrainConfig, plugins=None):
    """The configured source of soft targets (a ``register_soft_targets`` plugin), or None for plain SFT."""
    if config.objective == "sft":
        return None
    from ..plugins import load_plugins
    from .divergence import beta_of
    from .kd import KDSettings

    plugins = plugins or load_plugins()
    if config.kd_source not in plugins.soft_targets:
        raise UsageError(f"--kd-source {config.kd_source}: unknown source of soft targets (known: {', '.join(plugins.soft_targets.names())})")
    settings = KDSettings(source=config.kd_source, temperature=config.kd_temperature,
                          beta=beta_of(config.kd_divergence, config.kd_beta), teacher_model=config.teacher_model,
                          teacher_device=config.teacher_device, teacher_max_length=config.kd_teacher_max_length,
                          top_k=config.kd_top_k, on_policy=config.kd_on_policy, teacher_8bit=config.teacher_8bit)  # fmt: skip
    source = plugins.soft_targets.get(config.kd_source)(settings)
    if config.kd_on_policy and not callable(getattr(source, "sample_from_student", None)):
        raise UsageError(f"--kd-on-policy needs a teacher that can score the student's own samples: --kd-source teacher, not {config.kd_source}")
    return source


def train_trl_sft(config: TrainConfig, plugins=None) -> Path:
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig

    splits, build_report = load_split_rows(config.data)
    soft = soft_targets(config, plugins)  # checked before the model loads: a wrong source is refused at once
    if config.objective == "kd":  # alpha * hard + (1 - alpha) * soft: the rationale rows have no term
        unused = sum(r.get("task") == "rationale" for r in splits["train"])
        if unused:
            print(f"--objective kd: {unused} rationale rows are not trained on (--objective multitask+kd uses them)", file=sys.stderr)
        splits = {name: [r for r in rows if r.get("task") != "rationale"] for name, rows in splits.items()}
        if not splits["train"]:
            raise UsageError(f"--objective kd: {config.data} has no answer rows to train on")
    out = Path(config.out)
    checkpoints = out / "checkpoints"
    resume = None
    if config.resume:  # checked before the model loads: a wrong checkpoint is refused at once
        path, notes = pick_checkpoint(checkpoints, config)
        for note in notes:
            print(f"--resume: {note}", file=sys.stderr)
        resume = str(path)
    device = pick_device(config.device)
    gpu = device == "cuda"
    if config.qlora and not gpu:
        raise UsageError("--qlora needs a CUDA GPU (4-bit bitsandbytes); on CPU use --lora")
    bf16 = config.bf16 if config.bf16 is not None else (gpu and torch.cuda.is_bf16_supported())
    if bf16 and not gpu:
        raise UsageError("--bf16 needs a CUDA GPU; on CPU leave it off")
    checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else gpu
    set_seed(config.seed)

    quant = None
    if config.qlora:
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model, tokenizer = load_model(config.student, device=device, dtype=torch.bfloat16 if bf16 else torch.float32,
                                  quantization_config=quant)  # fmt: skip
    if config.student_keep_every > 1:
        keep_every_kth_layer(model, config.student_keep_every)
    if soft is not None:
        soft.setup(model, tokenizer, device)
    peft_config = None
    if config.lora or config.qlora:
        from peft import LoraConfig

        targets = config.lora_target_modules
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=targets if targets == "all-linear" else targets.split(","),
                                 task_type="CAUSAL_LM")  # fmt: skip

    fit, soft_notes = {}, {}

    def tokenized(split, rows):
        if soft is not None:
            soft.notes = {}
            rows = soft.prepare(rows)
        items, fit[split] = tokenize_rows(rows, tokenizer, config.max_length, soft)
        if soft is not None:
            soft_notes[split] = dict(soft.notes)
        return Dataset.from_list(items) if items else None

    train_ds = tokenized("train", splits["train"])
    if train_ds is None:
        raise UsageError(f"--max-length {config.max_length}: no training row fits (each completion needs its EOS and at "
                         f"least {min_prompt_tokens(config.max_length)} prompt tokens); raise --max-length")  # fmt: skip
    if soft is not None:
        soft.check()  # its notes are the training split's: it is tokenized first
        if not any(sum(m) > 0 for m in train_ds["kd_mask"]):
            found = "; ".join(f"{k}: {v}" for k, v in soft_notes["train"].items()) or "nothing to read"
            raise UsageError(f"--kd-source {config.kd_source}: no training row has a soft target ({found})")
    eval_rows = splits.get(config.eval_split) if config.eval_split and config.eval_split != "none" else None
    eval_ds = tokenized(config.eval_split, eval_rows) if eval_rows else None
    if soft is not None:
        soft.release()

    lr = config.learning_rate or (2e-4 if peft_config else 5e-5)
    args = SFTConfig(
        output_dir=str(checkpoints), num_train_epochs=config.epochs, max_steps=config.max_steps, learning_rate=lr,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, warmup_steps=config.warmup_ratio,  # a float < 1 is a fraction
        weight_decay=config.weight_decay, lr_scheduler_type=config.lr_scheduler, seed=config.seed,
        data_seed=config.seed, bf16=bf16, fp16=False, activation_checkpointing=checkpointing, use_cpu=not gpu,
        logging_steps=config.logging_steps, logging_first_step=True,
        save_strategy=config.save_strategy, save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        eval_strategy="epoch" if eval_ds is not None else "no", report_to="none", remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, disable_tqdm=False,
        dataloader_pin_memory=gpu,
    )  # fmt: skip
    Trainer = make_trainer_class()
    weights, kd_weight = objective_weights(config)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                      data_collator=MultiTaskCollator(tokenizer.pad_token_id, soft.fields if soft else None),
                      peft_config=peft_config, task_weights=weights, soft=soft, kd_weight=kd_weight,
                      rationale_schedule=config.rationale_schedule)  # fmt: skip
    if not config.resume and checkpoints.is_dir():
        shutil.rmtree(checkpoints)  # another run's checkpoints would mix with this one's (and be rotated out)
    trainer.add_callback(CheckpointMark(fingerprint(config, LENGTH)))
    result = trainer.train(resume_from_checkpoint=resume)

    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # before a merge folds the adapter away
    if peft_config and config.merge_adapter:
        model = model.merge_and_unload()
    begin_output(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    history = [h for h in trainer.state.log_history]
    meta = {"config": to_dict(config), "dataset": build_report, "versions": versions(), "device": device, "bf16": bf16,
            "learning_rate": lr, "train_runtime_s": result.metrics.get("train_runtime"), "log_history": history,
            "parameters": parameter_count(model), "fingerprint": fingerprint(config), "resumed_from": resume,
            "fit": fit, "soft_targets": soft_notes or None, "layers": getattr(model.config, "num_hidden_layers", None),
            "trainable_parameters": trainable}  # fmt: skip
    data_card = Path(config.data) / "README.md"
    if data_card.is_file():
        shutil.copy(data_card, out / "DATASET_CARD.md")
    (out / "README.md").write_text(model_card(meta))
    finish_output(out, meta)  # last: the manifest, with every file's hash
    return out


def keep_every_kth_layer(model, k: int) -> None:
    """Make the model a shallower student of itself: keep decoder layers 0, k, 2k, ... (the DistilBERT
    initialisation, Sanh et al. 2019), and say so in its config so the saved student reloads as that depth."""
    decoder = model.get_decoder()
    layers = decoder.layers
    keep = list(range(0, len(layers), k))
    decoder.layers = torch.nn.ModuleList(layers[i] for i in keep)
    for new, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    from .divergence import text_config

    config = text_config(model)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)


def CheckpointMark(run_fingerprint: str):
    """A callback that marks each checkpoint complete (the trainer calls on_save after writing all of it), with
    the run's fingerprint, so --resume can tell a whole checkpoint of this run from a torn or foreign one."""
    from transformers import TrainerCallback

    class Mark(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir() and state.is_world_process_zero:
                (path / CHECKPOINT_MARK).write_text(json.dumps({"fingerprint": run_fingerprint, "step": state.global_step}) + "\n")

    return Mark()


def versions() -> dict:
    import peft
    import transformers
    import trl

    import rationale_distill

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "peft": peft.__version__, "rationale_distill": rationale_distill.__version__}  # fmt: skip
