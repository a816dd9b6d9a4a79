"""The multi-task objective's batches and loss: right-padded batches with a task id per row, per-task token counts,
L = w_label * L_label + lambda * L_rationale with each term averaged over its own completion tokens, the rationale
weight's schedule, and the LM head run only at completion positions.

    L = L_label + lambda * L_rationale                                  (Hsieh et al. 2023, "Distilling Step-by-Step")
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class MultiTaskCollator:
    """Right-pad a list of tokenized rows into a batch: input_ids, attention_mask, labels, task_ids, and with soft
    targets ``kd_mask`` and the source's fields (each padded to its own widest row with the source's pad value)."""

    def __init__(self, pad_token_id: int, fields: dict | None = None):
        self.pad = pad_token_id
        self.fields = {"kd_mask": 0.0, **fields} if fields is not None else {}

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                 "task_ids": torch.tensor([r["task_id"] for r in rows], dtype=torch.long)}  # fmt: skip
        for name, pad in self.fields.items():
            values = [torch.tensor(r[name]) for r in rows]
            widest = max(len(v) for v in values)
            out = torch.full((len(rows), widest, *values[0].shape[1:]), pad, dtype=values[0].dtype)
            for i, v in enumerate(values):
                out[i, : len(v)] = v
            batch[name] = out
        return batch


# --- loss -----------------------------------------------------------------------------------------------------


def task_token_counts(labels: torch.Tensor, task_ids: torch.Tensor, n_tasks: int = 2) -> torch.Tensor:
    """Completion tokens per task, counted as the loss counts them (after the causal shift). Shape (n_tasks,)."""
    targets = labels[:, 1:] != -100  # (B, T-1)
    per_row = targets.sum(dim=1)  # (B,)
    return torch.stack([per_row[task_ids == t].sum() for t in range(n_tasks)]).to(torch.float32)


def batch_counts(batch: dict) -> torch.Tensor:
    """(label tokens, rationale tokens, soft-target mass): the denominators of the three terms for one batch."""
    kd = batch["kd_mask"].sum().float()[None] if "kd_mask" in batch else torch.zeros(1)
    return torch.cat([task_token_counts(batch["labels"], batch["task_ids"]), kd])


def completion_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the positions whose logits the loss reads (position i predicts token i + 1, a completion token)."""
    return F.pad(labels, (0, 1), value=-100)[:, 1:] != -100


def rows_at(x: torch.Tensor | None, kept: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor | None:
    """``x``'s rows at the (B, T) mask ``where``, row-major. ``x`` is (B, T, ...) when ``kept`` is None, or already
    (N, ...) at the positions of the mask ``kept`` (the model computed its head there only; ``where`` is inside it)."""
    if x is None:
        return None
    if kept is None:
        return x[where]
    return x if torch.equal(where, kept) else x[where[kept]]


def multitask_loss(logits, labels, task_ids, weights, counts) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """sum_t weights[t] * (sum of task-t token losses) / counts[t]; returns (loss, per-task mean losses).

    ``logits`` are (B, T, V), or (N, V): already taken at ``completion_positions(labels)`` in row-major order (the
    model computed them there only). Labels are shifted, not logits (slicing logits would copy the whole (B, T, V)
    tensor), and the cross-entropy is computed only at completion positions: prompt and padding positions never
    reach the softmax."""
    targets = F.pad(labels, (0, 1), value=-100)[:, 1:]  # (B, T): position i predicts token i+1
    valid = completion_positions(labels)  # (B, T): targets != -100
    picked = logits[valid] if logits.dim() == 3 else logits
    token_loss = F.cross_entropy(picked.float(), targets[valid], reduction="none")  # (N,) completion tokens
    token_task = task_ids[:, None].expand_as(targets)[valid]  # (N,)
    loss = token_loss.new_zeros(())
    parts = []
    for t, weight in enumerate(weights):
        selected = token_task == t
        total = token_loss[selected].sum()
        loss = loss + weight * total / counts[t].clamp(min=1)
        parts.append((total / selected.sum().clamp(min=1)).detach())
    return loss, parts


def schedule(name: str, progress: float) -> float:
    """The factor on lambda at this point of training (progress in [0, 1]): constant, linear-decay or cosine-decay.
    A decaying lambda leans on the rationales early and on the answer late."""
    if name == "linear-decay":
        return 1.0 - progress
    if name == "cosine-decay":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def head_takes_a_mask(model) -> bool:
    """Whether ``model(..., logits_to_keep=mask)`` with a (B, T) boolean mask returns logits at the masked positions
    only, flattened to (N, V) (transformers' ``slice_logits_to_keep``; most causal LMs). Then the LM head runs at
    completion positions only: on a small model with a large vocabulary it is much of the work (Gemma 3 270M: 168M
    of its 270M parameters are the 262k x 640 embedding the head shares), and a prompt position's logits are never
    read by the loss. Probed once with a two-token input in eval mode (no dropout draw, so seeded runs do not move)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids = torch.zeros((1, 2), dtype=torch.long, device=device)
        keep = torch.tensor([[False, True]], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=keep, use_cache=False).logits
        return logits.dim() == 2 and logits.shape[0] == 1
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        model.train(was_training)
