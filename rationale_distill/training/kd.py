"""Soft targets (Hinton et al. 2015): the teacher's distributions, and the divergence the student is trained on.

    L = w_label * L_label + lambda * L_rationale + w_kd * T^2 * L_KD

``--objective kd`` sets w_label = alpha, lambda = 0, w_kd = 1 - alpha; ``multitask+kd`` sets w_label = 1 and
w_kd = ``--kd-weight``. L_KD is a sum over the completion positions that carry a soft target, divided by how many
there are in the whole gradient-accumulation window (so it, like the other terms, does not depend on how rows fall
into micro-batches). The divergence is picked by ``beta`` in TRL's convention: 0 the forward KL(teacher || student),
1 the reverse KL(student || teacher) (MiniLLM's mode seeking), anything between the generalised JSD with the mixture
(1 - beta) p_student + beta p_teacher (GKD, Agarwal et al. 2024).

Each source of soft targets is a plugin (``register_soft_targets``) behind one small interface, ``SoftTargets``:

- ``teacher``: a white-box causal LM with the student's vocabulary. Its distribution at every completion token is
  computed in the training step (eval mode, no grad, optionally on another device). With context-distillation data
  (Snell et al. 2022) the teacher reads the engineered prompt the API teacher was sent and the student the bare
  input; the divergence is taken on the aligned completion tokens. The full-vocabulary divergence runs through TRL's
  ``ChunkedDivergenceFunction`` (from the hidden states and the LM heads, in tiles: neither model's logits for the
  batch exist in full), the kernel of TRL's own ``DistillationTrainer``. That trainer is not used whole: it takes
  prompts, generates completions and has no multi-task loss, where this trainer reads the dataset's fixed
  completions, so the kernel is reused inside the project's trainer instead.
- ``logprobs``: the top-K logprobs an API teacher returned for the answer tokens (``rdistill generate --logprobs K``).
  The target is that top-K distribution plus one remainder bucket holding the rest of the mass; the student's
  distribution is folded onto the same K + 1 outcomes. Needs the student's tokenizer to be the teacher's: checked on
  the recorded tokens, refused in one line otherwise.
- ``votes``: answer-level soft labels. An example whose samples split 3/5 "7" and 2/5 "8" trains on both answers,
  weighted 0.6 and 0.4 (a weighted cross-entropy, which is the KL to the vote distribution up to a constant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.dataset import SOFT_FIELDS
from ..errors import UsageError
from .divergence import divergence, full_divergence, text_config, topk_divergence  # divergence: re-exported for plugins

# --- the sources ----------------------------------------------------------------------------------------------


@dataclass
class KDSettings:
    """What the trainer needs to know about the objective, from TrainConfig."""

    source: str
    temperature: float
    beta: float
    teacher_model: str | None = None
    teacher_device: str | None = None
    teacher_max_length: int = 2048
    top_k: int = 20
    on_policy: float = 0.0  # share of training batches on the student's own samples (teacher source only)
    teacher_8bit: bool = False  # load the white-box teacher in 8 bits (bitsandbytes, CUDA)


class SoftTargets:
    """One source of soft targets. The trainer calls, in order: ``setup`` once the student is loaded, then per split
    ``prepare`` on the dataset's rows and ``features`` on each tokenized row, ``check`` after the training split,
    ``release`` after the last split, and ``per_token`` in each training step. ``fields`` names the per-row tensors
    ``features`` adds (padded by the collator with the given value); ``kd_mask`` (a weight per position: which
    completion positions carry a target, in the causal-shift convention of the loss) is added by every source.
    ``tempered`` says whether the term is scaled by T^2. A source with ``sample_from_student`` (rows the trainer collates like its own) can go on-policy."""

    name = "?"
    fields: dict = {}
    tempered = True  # the divergence is on softened logits: the term is scaled by T^2 (Hinton et al.)

    def __init__(self, settings: KDSettings):
        self.settings = settings
        self.notes: dict = {}  # counts for the model card: rows with a target, rows without and why

    def setup(self, model, tokenizer, device: str) -> None:
        self.tokenizer = tokenizer

    def prepare(self, rows: list[dict]) -> list[dict]:
        return rows

    def features(self, row: dict, item: dict, prompt_len: int) -> dict:
        """``kd_mask`` and ``fields`` for one tokenized row (a row with no target gets an all-zero ``kd_mask``)."""
        raise NotImplementedError

    def check(self) -> None:
        """Called once the training rows are tokenized: refuse here what only the whole set shows."""

    def release(self) -> None:
        """Called once every split is tokenized: drop what only ``features`` needed."""

    def per_token(self, trainer, model, inputs: dict, extra: dict, kd_mask, hidden, logits) -> torch.Tensor:
        """The divergence at each position with a target, in ``kd_mask``'s row-major order (N,). ``hidden`` (N, H)
        (what the student's LM head read) and ``logits`` (N, V) are already taken at those positions (``kd_mask >
        0``, row-major: the model computes its head there only); ``inputs`` and ``extra`` are the micro-batch's
        (B, T, ...) tensors, to be indexed with ``kd_mask > 0``."""
        raise NotImplementedError

    def count(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n


def completion_mask(length: int, prompt_len: int, weight: float = 1.0) -> list[float]:
    """Weight at each position that predicts a completion token (position p predicts token p + 1)."""
    return [weight if prompt_len - 1 <= p < length - 1 else 0.0 for p in range(length)]


class TeacherModel(SoftTargets):
    """A white-box teacher read on the fly (see the module docstring)."""

    name = "teacher"
    fields = {"teacher_input_ids": 0, "teacher_attention_mask": 0, "teacher_kd_mask": 0.0}

    def __init__(self, settings):
        super().__init__(settings)
        if not settings.teacher_model:
            raise UsageError("--kd-source teacher needs --teacher-model (a causal LM with the student's tokenizer); "
                             "or pick --kd-source logprobs or votes")  # fmt: skip

    def setup(self, model, tokenizer, device):
        from ..student import load_model

        super().setup(model, tokenizer, device)
        s = self.settings
        self.device = s.teacher_device or device
        quant = None
        if s.teacher_8bit:
            if not self.device.startswith("cuda"):
                raise UsageError("--teacher-8bit needs a CUDA GPU for the teacher (bitsandbytes); on CPU leave it off")
            from transformers import BitsAndBytesConfig

            quant = BitsAndBytesConfig(load_in_8bit=True)  # the LM head stays unquantised: the divergence reads it
        teacher, self.teacher_tokenizer = load_model(s.teacher_model, device=self.device, dtype=next(model.parameters()).dtype,
                                                     quantization_config=quant)  # fmt: skip
        if hasattr(teacher, "peft_config"):
            teacher = teacher.merge_and_unload()  # a distilled adapter as teacher: read it as one model
        self.teacher = teacher.eval().requires_grad_(False)
        same_vocab(tokenizer, self.teacher_tokenizer, f"--teacher-model {s.teacher_model}")
        head = self.teacher.get_output_embeddings().weight
        self.teacher_head = head if self.device == device else head.detach().to(device)  # copied once, not per step

    def features(self, row, item, prompt_len):
        ids = item["input_ids"]
        completion = ids[prompt_len:]
        if row.get("teacher_messages"):  # context distillation: the teacher reads the prompt it was sent
            prompt_ids = self._teacher_prompt(row)
            if row.get("teacher_prefix"):  # and its own response up to the answer
                prompt_ids = prompt_ids + self.teacher_tokenizer(row["teacher_prefix"], add_special_tokens=False)["input_ids"]
            budget = self.settings.teacher_max_length - len(completion)
            if len(prompt_ids) > budget:
                self.count("teacher prompts cut from the left")
                prompt_ids = prompt_ids[:1] + prompt_ids[len(prompt_ids) - budget + 1 :]
            teacher_ids = prompt_ids + completion
            self.count("rows the teacher reads with the engineered prompt")
        else:
            prompt_ids, teacher_ids = ids[:prompt_len], ids
            self.count("rows the teacher reads as the student does")
        return {"kd_mask": completion_mask(len(ids), prompt_len), "teacher_input_ids": teacher_ids,
                "teacher_attention_mask": [1] * len(teacher_ids),
                "teacher_kd_mask": completion_mask(len(teacher_ids), len(prompt_ids))}  # fmt: skip

    def _teacher_prompt(self, row) -> list[int]:
        from ..generation.local_engine import prompt_of

        tok, messages = self.teacher_tokenizer, row["teacher_messages"]
        if row.get("teacher_format") == "text" or not getattr(tok, "chat_template", None):
            return tok(prompt_of(messages))["input_ids"]
        return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False))

    def per_token(self, trainer, model, inputs, extra, kd_mask, hidden, logits):
        with torch.no_grad():
            t_hidden = self.teacher.base_model(input_ids=extra["teacher_input_ids"].to(self.device),
                                               attention_mask=extra["teacher_attention_mask"].to(self.device),
                                               use_cache=False).last_hidden_state  # fmt: skip
        t_hidden = t_hidden.to(hidden.device)[extra["teacher_kd_mask"].to(hidden.device) > 0]
        if hidden.shape[0] != t_hidden.shape[0]:
            raise RuntimeError(f"soft targets: {hidden.shape[0]} student positions against {t_hidden.shape[0]} teacher positions")
        return full_divergence(hidden, model.get_output_embeddings().weight, t_hidden, self.teacher_head,
                               self.settings.beta, self.settings.temperature, s_model=model, t_model=self.teacher)  # fmt: skip

    def sample_from_student(self, model, inputs, extra, kd_mask) -> list[dict]:
        """Rows for the on-policy soft term, to be collated like any other: each row's prompt (student side and
        teacher side) followed by a completion the student samples now (temperature 1, as long as the row's own
        completion at most), with ``kd_mask`` and the teacher's fields on the sampled tokens."""
        tok = self.tokenizer
        rows = []
        for i in range(kd_mask.shape[0]):
            marked = (kd_mask[i] > 0).nonzero().flatten()
            if len(marked) == 0:
                continue
            start, length = int(marked[0]) + 1, len(marked)  # the first completion token, and how many there were
            t_marked = (extra["teacher_kd_mask"][i] > 0).nonzero().flatten()
            rows.append((inputs["input_ids"][i, :start].tolist(), extra["teacher_input_ids"][i, : int(t_marked[0]) + 1].tolist(), length))
        was_training = model.training
        model.eval()
        items = []
        with torch.no_grad():
            for prompt, t_prompt, length in rows:  # one at a time: no left padding to undo, and rows are few per micro-batch
                ids = torch.tensor([prompt], device=kd_mask.device)
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                                     max_new_tokens=length, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
                new = out[0, len(prompt) :].tolist()
                if tok.eos_token_id in new:
                    new = new[: new.index(tok.eos_token_id) + 1]
                new = new or [tok.eos_token_id]
                t_ids = t_prompt + new
                items.append({"input_ids": prompt + new, "labels": [-100] * len(prompt) + new, "task_id": 0,
                              "kd_mask": completion_mask(len(prompt) + len(new), len(prompt)),
                              "teacher_input_ids": t_ids, "teacher_attention_mask": [1] * len(t_ids),
                              "teacher_kd_mask": completion_mask(len(t_ids), len(t_prompt))})  # fmt: skip
        model.train(was_training)
        return items


class TopKTargets:
    """What the two top-K sources share: per-position (K ids, K logprobs) fields, blank for positions without a
    target, and the K + 1-way divergence (``topk_divergence``)."""

    fields = {"topk_ids": 0, "topk_logprobs": -math.inf}

    def blank(self, n: int) -> dict:
        k = self.settings.top_k
        return {"kd_mask": [0.0] * n, "topk_ids": [[0] * k for _ in range(n)], "topk_logprobs": [[-math.inf] * k for _ in range(n)]}

    def per_token(self, trainer, model, inputs, extra, kd_mask, hidden, logits):
        at = kd_mask > 0
        return topk_divergence(logits, extra["topk_ids"][at], extra["topk_logprobs"][at], self.settings.beta,
                               self.settings.temperature)  # fmt: skip


class TeacherTopK(TopKTargets, TeacherModel):
    """The white-box teacher read once, before training: its top-K log-probabilities at every completion position are
    kept (float16, ``--kd-top-k``) and the teacher is released, so a teacher too big to sit beside the student in
    training only has to fit alone first. Training then uses the K + 1-way divergence of the ``logprobs`` source."""

    name = "teacher-topk"
    fields = TopKTargets.fields
    sample_from_student = None  # the teacher is gone by the time the student samples: no on-policy batches

    def features(self, row, item, prompt_len):
        view = super().features(row, item, prompt_len)
        ids = torch.tensor([view["teacher_input_ids"]], device=self.device)
        with torch.no_grad():
            logits = self.teacher(input_ids=ids, use_cache=False).logits[0].float()
        at = torch.tensor(view["teacher_kd_mask"], device=self.device) > 0
        top = logits[at].log_softmax(-1).topk(min(self.settings.top_k, logits.shape[-1]), dim=-1)
        out = {**self.blank(len(item["input_ids"])), "kd_mask": view["kd_mask"]}
        mine = [p for p, m in enumerate(view["kd_mask"]) if m > 0]
        values = top.values.half().float().tolist()  # stored at float16 precision
        for j, p in enumerate(mine):
            out["topk_ids"][p][: top.indices.shape[1]] = top.indices[j].tolist()
            out["topk_logprobs"][p][: top.indices.shape[1]] = values[j]
        return out

    def release(self) -> None:
        """Every row has its targets: the teacher is no longer needed in memory."""
        self.teacher = self.teacher_head = None
        import gc

        gc.collect()


def same_vocab(student_tok, teacher_tok, what: str) -> None:
    """Refuse a teacher whose token ids mean something else than the student's."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s != t:
        only = len(set(t) - set(s))
        raise UsageError(f"{what}: its tokenizer ({teacher_tok.name_or_path}, {len(t):,} tokens) is not the student's "
                         f"({student_tok.name_or_path}, {len(s):,} tokens; {only:,} of the teacher's are not in it), and "
                         "soft targets need one vocabulary: train on the teacher's text (--objective sft), or use a "
                         "student of the teacher's family")  # fmt: skip


class TopLogprobs(TopKTargets, SoftTargets):
    """The top-K logprobs an API teacher returned for the answer tokens (see the module docstring)."""

    name = "logprobs"

    def setup(self, model, tokenizer, device):
        super().setup(model, tokenizer, device)
        self.pieces = token_pieces(tokenizer)
        self.ids: dict[str, int] = {}
        for i, piece in enumerate(self.pieces):
            self.ids.setdefault(piece, i)
        self.teachers: set[str] = set()

    def features(self, row, item, prompt_len):
        k = self.settings.top_k
        blank = self.blank(len(item["input_ids"]))
        recorded = row.get("teacher_logprobs")
        if not recorded or not recorded.get("tokens"):
            self.count("rows without teacher logprobs")
            return blank
        self.teachers.add(recorded.get("teacher") or "?")
        tokens = recorded["tokens"]
        mine = [self.pieces[i] for i in item["input_ids"][prompt_len:]]
        theirs = [e["token"] for e in tokens]
        start = _find(mine, theirs)
        if start is None:
            written = "".join(theirs).strip()
            self.count("rows whose recorded tokens are not the student's" if written and written in "".join(mine)
                       else "rows whose answer is written differently from the recorded one")  # fmt: skip
            return blank
        for j, entry in enumerate(tokens):
            top = entry.get("top_logprobs") or [{"token": entry["token"], "logprob": entry["logprob"]}]
            pairs, seen = [], set()
            for alt in top:
                tid = self.ids.get(alt["token"])
                if tid is None:
                    self.count("recorded alternatives not in the student's vocabulary")
                    continue
                if tid not in seen and alt.get("logprob") is not None and len(pairs) < k:
                    seen.add(tid)
                    pairs.append((tid, float(alt["logprob"])))
            if not pairs:
                continue
            p = prompt_len - 1 + start + j  # the position that predicts this token
            blank["topk_ids"][p][: len(pairs)] = [t for t, _ in pairs]
            blank["topk_logprobs"][p][: len(pairs)] = [lp for _, lp in pairs]
            blank["kd_mask"][p] = 1.0
        self.count("rows with teacher logprobs")
        return blank

    def check(self) -> None:
        bad = self.notes.get("rows whose recorded tokens are not the student's", 0)
        good = self.notes.get("rows with teacher logprobs", 0)
        if bad and bad >= good:
            raise UsageError(f"--kd-source logprobs: the teacher's tokens ({', '.join(sorted(self.teachers))}) are not the "
                             f"student's ({self.tokenizer.name_or_path}) on {bad} of {bad + good} rows: API logprobs need "
                             "the student to share the teacher's tokenizer. Train on the teacher's text (--objective sft), "
                             "use --kd-source votes, or a teacher that uses the student's tokenizer")  # fmt: skip


def token_pieces(tokenizer) -> list[str]:
    """The text each token id stands for in running text (a leading space included), as API logprobs spell tokens:
    each id is decoded after a fixed plain token, whose own text is then cut off."""
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
    head = tokenizer.decode(anchor)
    texts = tokenizer.batch_decode([anchor + [i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
    return [t[len(head) :] if t.startswith(head) else t for t in texts]


def _find(haystack: list[str], needle: list[str]) -> int | None:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return None


class VoteShares(SoftTargets):
    """Answer-level soft labels from the teacher's votes (see the module docstring)."""

    name = "votes"
    tempered = False  # a weighted cross-entropy on whole answers: no logits to soften

    def prepare(self, rows):
        out = []
        for row in rows:
            out.append(row)
            if row.get("task") not in ("label", "context"):
                continue
            votes = {v["answer"]: v["samples"] for v in row.get("answer_votes") or []}  # answers as the completion spells them
            if not votes:
                self.count("answer rows without votes")
                continue
            total = sum(votes.values())
            self.count("answer rows with votes")
            for answer, n in votes.items():
                soft = {k: v for k, v in row.items() if k not in SOFT_FIELDS}
                if "messages" in row:
                    soft["messages"] = [*row["messages"][:-1], {"role": "assistant", "content": answer}]
                else:
                    soft["completion"] = answer
                out.append({**soft, "task": "soft", "weight": n / total})
        return out

    def features(self, row, item, prompt_len):
        weight = row["weight"] if row.get("task") == "soft" else 0.0
        return {"kd_mask": completion_mask(len(item["input_ids"]), prompt_len, weight)}

    def per_token(self, trainer, model, inputs, extra, kd_mask, hidden, logits):
        targets = F.pad(inputs["labels"], (0, 1), value=-100)[:, 1:]
        return F.cross_entropy(logits.float(), targets[kd_mask > 0], reduction="none")


SOURCES = {cls.name: cls for cls in (TeacherModel, TeacherTopK, TopLogprobs, VoteShares)}
