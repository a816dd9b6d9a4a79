"""The divergences a student is trained on against soft targets, in TRL's ``beta`` convention: 0 the forward
KL(teacher || student) (Hinton et al. 2015), 1 the reverse KL(student || teacher) (MiniLLM), anything between the
generalised JSD with the mixture (1 - beta) p_student + beta p_teacher (GKD, Agarwal et al. 2024).

- ``divergence``: two log-distributions over the same outcomes, row by row.
- ``full_divergence``: over the whole vocabulary from hidden states and LM heads, in tiles (TRL's kernel).
- ``topk_divergence``: a teacher's top-K plus a remainder bucket against the student folded onto the same K + 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BETAS = {"forward_kl": 0.0, "reverse_kl": 1.0}  # jsd: --kd-beta


def beta_of(divergence: str, jsd_beta: float) -> float:
    return BETAS[divergence] if divergence in BETAS else jsd_beta


# --- divergences ----------------------------------------------------------------------------------------------


def divergence(s_logp: torch.Tensor, t_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row divergence over the last dimension between two log-distributions (entries of -inf are outcomes with
    zero mass). beta 0: KL(t || s); 1: KL(s || t); else the generalised JSD with mixture (1 - beta) s + beta t."""

    def kl(p_logp, q_logp):  # sum p (log p - log q), with 0 log 0 = 0
        p = p_logp.exp()
        return torch.where(p > 0, p * (p_logp - q_logp), torch.zeros_like(p)).sum(-1)

    if beta == 0.0:
        return kl(t_logp, s_logp)
    if beta == 1.0:
        return kl(s_logp, t_logp)
    m = torch.logsumexp(torch.stack([s_logp + math.log(1 - beta), t_logp + math.log(beta)]), dim=0)
    return beta * kl(t_logp, m) + (1 - beta) * kl(s_logp, m)


def full_divergence(s_hidden, s_head, t_hidden, t_head, beta: float, temperature: float, s_model=None, t_model=None):
    """Per-position divergence over the whole vocabulary, from hidden states (N, H) and LM-head weights (V, H),
    computed in tiles by TRL's kernel (the (N, V) logits are never materialised)."""
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    s_scale, s_cap = _logit_transform(s_model)
    t_scale, t_cap = _logit_transform(t_model)
    per_token, _entropy = ChunkedDivergenceFunction.apply(s_hidden, s_head, None, t_hidden, t_head, None, beta, temperature,
                                                          s_scale, s_cap, t_scale, t_cap)  # fmt: skip
    return per_token


def text_config(model):
    """The language model's own config (a multimodal model nests it)."""
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def _logit_transform(model) -> tuple[float, float | None]:
    """(logit scale, final soft-cap) the model applies to its logits (Gemma 2 caps them; most models do neither)."""
    if model is None:
        return 1.0, None
    config = text_config(model)
    return float(getattr(config, "logit_scale", None) or 1.0), getattr(config, "final_logit_softcapping", None)


def topk_divergence(logits: torch.Tensor, ids: torch.Tensor, t_logp: torch.Tensor, beta: float, temperature: float) -> torch.Tensor:
    """Per-position divergence between the teacher's top-K distribution plus a remainder bucket and the student's
    distribution folded onto the same K + 1 outcomes. ``logits`` (N, V); ``ids`` (N, K) token ids; ``t_logp`` (N, K)
    the teacher's logprobs (-inf pads a position with fewer than K). With K = V (no remainder) this is the full
    divergence. The temperature divides both (K + 1)-way log-distributions, which with K = V is the usual tempered
    softmax."""
    s_all = F.log_softmax(logits.float(), dim=-1)
    present = torch.isfinite(t_logp)
    s_k = s_all.gather(1, ids).masked_fill(~present, -math.inf)
    # the student's remainder: the log-mass of every token not among this position's top K
    taken = torch.zeros_like(s_all, dtype=torch.bool).scatter(1, ids, present)
    s_rest = torch.logsumexp(s_all.masked_fill(taken, -math.inf), dim=-1, keepdim=True)
    # the teacher's remainder, log(1 - sum p_k): floored at 1e-6 (rounded logprobs can sum to 1, which would make the
    # reverse KL infinite), and empty where the student's is (the K tokens are the whole vocabulary: no bucket at all)
    t_mass = torch.logsumexp(t_logp, dim=-1, keepdim=True).clamp(max=0.0)
    t_rest = torch.log((-torch.expm1(t_mass)).clamp(min=1e-6))
    t_rest = torch.where(torch.isinf(s_rest), torch.full_like(t_rest, -math.inf), t_rest)
    s = torch.cat([s_k, s_rest], dim=-1) / temperature
    t = torch.cat([t_logp.float(), t_rest], dim=-1) / temperature
    return divergence(torch.log_softmax(s, dim=-1).nan_to_num(nan=-math.inf), torch.log_softmax(t, dim=-1).nan_to_num(nan=-math.inf), beta)
