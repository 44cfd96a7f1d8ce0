"""Response-token log-probs through the LM head in chunks of positions, never the whole logits at once.

A causal LM's output layer maps each scored position's last hidden state onto the vocabulary
(49,152 logits per token for SmolLM2): over a batch of long responses the logits, their float copy
and the softmax autograd keeps would dwarf the rest of the activations. Here the head runs
``chunk`` positions at a time, each chunk's log-prob of its target token is kept and the logits
are dropped; :class:`ChunkedHeadLogps` saves only the hidden states, the targets and one
log-normaliser per token, and recomputes each chunk's logits in backward. Peak memory is then
``chunk x vocab``, whatever the number of tokens.

The hidden states come from the model's own forward, called through whatever wrapper the caller
passes (DDP, FSDP2, peft, accelerate): the output embedding's ``forward`` is swapped, for that one
call, for a function that runs the chunked head *inside* the wrapped forward, where FSDP has the
head's weight gathered and DDP's hooks see it used. What the architecture does to the logits after
its head (Gemma's soft-capping, Cohere's and Granite's scaling) is reproduced from the config;
anything else is caught by :func:`dpo3d.scoring.logprobs`'s first-use check, which falls back to
:func:`logits_token_stats`, the full-logits path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dpo3d.models.wrappers import unwrap


@dataclass
class TokenStats:
    """Per scored token, flat: log π(target) (differentiable), and without gradient the policy's
    entropy, log Σ_v π(v)² and the last hidden state the head read (float32, (N, d); what CHES
    sums) when asked (else None)."""

    logps: torch.Tensor
    entropy: torch.Tensor | None = None
    log_sum_sq: torch.Tensor | None = None
    hidden: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> TokenStats:
        """The same tokens in another order (``index`` into the flat token axis)."""
        return TokenStats(*(None if t is None else t[index] for t in (self.logps, self.entropy, self.log_sum_sq, self.hidden)))


@dataclass(frozen=True)
class HeadTransform:
    """What the architecture applies to ``W h + b``, then the caller's sampling temperature:
    ``logits = cap * tanh(multiplier * z / cap) / temperature`` (no tanh when ``softcap`` is None)."""

    multiplier: float = 1.0
    softcap: float | None = None
    temperature: float = 1.0

    def apply(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final logits in float32 (float64 stays), in place on ``raw``, and tanh's value (for its derivative) if capped."""
        z = raw.to(torch.promote_types(raw.dtype, torch.float32))
        if self.multiplier != 1.0:
            z.mul_(self.multiplier)
        tanh = None
        if self.softcap is not None:
            tanh = z.div_(self.softcap).tanh_()
            z = tanh * self.softcap
        if self.temperature != 1.0:
            z.div_(self.temperature)
        return z, tanh

    def slope(self) -> float:
        return self.multiplier / self.temperature


def output_head(model) -> nn.Linear | None:
    """The output embedding if it is a plain linear map (not, e.g., a LoRA-wrapped head), else None."""
    base = unwrap(model)
    getter = getattr(base, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, nn.Linear) else None


def head_transform(model, temperature: float = 1.0) -> HeadTransform:
    """The post-head arithmetic the config declares, for the architectures that have one in transformers
    (Gemma 2/3: final_logit_softcapping; Cohere: logits * logit_scale; Granite: logits / logits_scaling).
    One this does not know is caught by the first-use comparison with the full logits."""
    config = getattr(unwrap(model), "config", None)
    multiplier = 1.0
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        multiplier *= float(scale)
    scaling = getattr(config, "logits_scaling", None)
    if isinstance(scaling, (int, float)) and not isinstance(scaling, bool) and scaling:
        multiplier /= float(scaling)
    cap = getattr(config, "final_logit_softcapping", None)
    return HeadTransform(multiplier, float(cap) if cap else None, float(temperature))


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts matmuls to on ``device_type``, or None when autocast is off there."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: the autocast dtype if autocast is on (as nn.Linear's would), else the weight's."""
    return autocast_dtype(hidden.device.type) or weight.dtype


class ChunkedHeadLogps(torch.autograd.Function):
    """(hidden (N, H), weight (V, H), bias (V,) | None, targets (N,)) -> log-prob of each target (N,),
    plus the entropy and log Σp² (empty unless asked; no gradient). Saves no (N, V) tensor."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, transform: HeadTransform, chunk: int, want_entropy: bool,
                want_log_sum_sq: bool):
        dtype = _compute_dtype(hidden, weight)
        n = hidden.shape[0]
        logps = torch.empty(n, dtype=torch.promote_types(dtype, torch.float32), device=hidden.device)
        lse = torch.empty_like(logps)
        entropy = torch.empty_like(logps) if want_entropy else logps.new_empty(0)
        log_sum_sq = torch.empty_like(logps) if want_log_sum_sq else logps.new_empty(0)
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, chunk):
                end = min(start + chunk, n)
                z, _ = transform.apply(F.linear(hidden[start:end].to(dtype), w, b))
                norm = torch.logsumexp(z, dim=-1)
                lse[start:end] = norm
                logps[start:end] = z.gather(1, targets[start:end, None])[:, 0] - norm
                if want_log_sum_sq:
                    log_sum_sq[start:end] = torch.logsumexp(2 * z, dim=-1) - 2 * norm
                if want_entropy:
                    probs = (z - norm[:, None]).exp_()
                    entropy[start:end] = norm - (probs * z).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.transform, ctx.chunk, ctx.dtype = transform, chunk, dtype
        ctx.mark_non_differentiable(entropy, log_sum_sq)
        return logps, entropy, log_sum_sq

    @staticmethod
    def backward(ctx, grad_logps, _grad_entropy, _grad_log_sum_sq):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        transform, chunk, dtype = ctx.transform, ctx.chunk, ctx.dtype
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        # accumulated over chunks in float32: summing bf16 partial products would lose the small ones
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        grad_weight = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=accumulate, device=bias.device) if need_bias else None
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk):
                end = min(start + chunk, hidden.shape[0])
                h = hidden[start:end].to(dtype)
                z, tanh = transform.apply(F.linear(h, w, b))
                grad = grad_logps[start:end].to(z.dtype)
                # d log p(y) / d logit_v = 1[v = y] - p_v, through the temperature, scaling and soft-cap
                g = z.sub_(lse[start:end, None]).exp_().mul_(-grad[:, None])
                g[torch.arange(end - start, device=g.device), targets[start:end]] += grad
                g.mul_(transform.slope())
                if tanh is not None:
                    g.mul_(1 - tanh * tanh)
                g_low = g.to(dtype)
                if need_hidden:
                    grad_hidden[start:end] = g_low @ w
                if need_weight:
                    grad_weight.add_(g_low.t() @ h)
                if need_bias:
                    grad_bias.add_(g.sum(0))
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None, None, None)


def head_token_stats(hidden: torch.Tensor, head: nn.Linear, targets: torch.Tensor, transform: HeadTransform,
                     chunk: int, entropy: bool = False, log_sum_sq: bool = False) -> TokenStats:
    """The chunked head over already selected hidden states (N, H)."""
    logps, ent, lsq = ChunkedHeadLogps.apply(hidden, head.weight, head.bias, targets, transform, chunk, entropy, log_sum_sq)
    return TokenStats(logps, ent if entropy else None, lsq if log_sum_sq else None)


def _kept_positions(scored: torch.Tensor) -> int:
    """How many trailing positions must reach the head: from the earliest position any row scores."""
    return scored.shape[1] - int(scored.float().argmax(-1).min())


def _call(model, inputs: dict, keep: int, hidden_states: bool = False):
    """The forward with only the last ``keep`` positions through the head and no KV cache (a cache would
    also hide packed position ids from transformers' mask builder); ``hidden_states``: also every layer's."""
    extra = {"output_hidden_states": True} if hidden_states else {}
    try:
        return model(**inputs, use_cache=False, logits_to_keep=keep, **extra)
    except TypeError as err:  # a forward without these keywords
        if "unexpected keyword" not in str(err):
            raise
        return model(**inputs, **extra)


def chunked_token_stats(model, inputs: dict, scored: torch.Tensor, targets: torch.Tensor, chunk: int,
                        temperature: float = 1.0, entropy: bool = False, log_sum_sq: bool = False,
                        hidden: bool = False) -> TokenStats:
    """Token stats of the positions ``scored`` (B, T) marks, through ``model``'s forward (wrapper included),
    the head chunked. ``targets``: each scored position's next token, row-major. Needs :func:`output_head`."""
    head = output_head(model)
    if head is None:
        raise ValueError("the model's output embedding is not a plain linear layer: use the full-logits path")
    keep = _kept_positions(scored)
    transform = head_transform(model, temperature)
    found: list[TokenStats] = []

    def forward(states: torch.Tensor) -> torch.Tensor:
        window = scored[:, scored.shape[1] - states.shape[1]:]  # the kept tail (all of it if keep was ignored)
        selected = states[window]
        stats = head_token_stats(selected, head, targets, transform, chunk, entropy, log_sum_sq)
        if hidden:
            stats.hidden = selected.detach().float()
        found.append(stats)
        # what the model sees as its logits: one column, tied to the result so that a DDP with
        # find_unused_parameters, tracing from the outputs, finds every parameter used
        return (stats.logps.sum() * 0).reshape(1, 1, 1).expand(*states.shape[:-1], 1)

    with _swapped_forward(head, forward):
        _call(model, inputs, keep)
    if len(found) != 1:
        raise RuntimeError(f"the output embedding ran {len(found)} times in one forward (expected once)")
    return found[0]


class _swapped_forward:
    def __init__(self, module: nn.Module, forward: Callable):
        self.module, self.forward = module, forward

    def __enter__(self):
        self.own = self.module.__dict__.get("forward")  # an instance-level forward someone set before us
        self.module.forward = self.forward

    def __exit__(self, *exc):
        if self.own is None:
            del self.module.forward
        else:
            self.module.forward = self.own


def logits_token_stats(model, inputs: dict, scored: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                       entropy: bool = False, log_sum_sq: bool = False, hidden: bool = False) -> TokenStats:
    """The same from the model's own logits (the whole vocabulary for every scored position at once):
    the reference path and the fallback for heads :func:`chunked_token_stats` cannot reproduce."""
    keep = _kept_positions(scored)
    outputs = _call(model, inputs, keep, hidden_states=hidden)
    states = outputs.hidden_states[-1][:, -keep:][scored[:, -keep:]].detach().float() if hidden else None
    logits = outputs.logits[:, -keep:][scored[:, -keep:]].float()
    if temperature != 1.0:
        logits = logits / temperature
    logps = -F.cross_entropy(logits, targets, reduction="none")
    ent = lsq = None
    if entropy or log_sum_sq:
        with torch.no_grad():
            log_all = torch.log_softmax(logits.detach(), dim=-1)
            if entropy:
                ent = -(log_all.exp() * log_all).sum(-1)
            if log_sum_sq:
                lsq = torch.logsumexp(2 * log_all, dim=-1)
    return TokenStats(logps, ent, lsq, states)
