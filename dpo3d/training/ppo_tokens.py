"""PPO's models, token by token: the value model, and per-token log-probs, entropy and values.

Everything is laid out on a ``(batch, response_tokens)`` grid, right-padded, row
by row in the order the tokens were generated, so the pure functions of
:mod:`dpo3d.losses.ppo` can take it as it is. The policy's log-probs are those of
:mod:`dpo3d.scoring.logprobs` (the LM head only on positions that predict a response token).
"""

from __future__ import annotations

import torch

from dpo3d.models.loading import LoadOptions, load_config, load_pretrained
from dpo3d.scoring.batches import PaddedBatch
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import token_stats


def load_value_model(spec: str, options: LoadOptions):
    """A per-token value head on a backbone; from a reward model its head starts as the RM's."""
    from transformers import AutoModelForTokenClassification

    config = load_config(spec, options, num_labels=1)
    config.classifier_dropout = 0.0  # values must be deterministic functions of the state
    return load_pretrained(AutoModelForTokenClassification, spec, options, config=config)


def without_dropout(model):
    """Set every dropout to 0: the ratio π/π_old and the old values must be measured the way the
    update sees them (the paper's PPO settings disable dropout too)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def response_grid(batch: PaddedBatch, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions predicting a response token (B, T), the (B, R) mask of the response grid)."""
    predicts = torch.zeros_like(batch.response_mask)
    predicts[:, :-1] = batch.response_mask[:, 1:]
    width = int(lengths.max())
    grid = torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
    return predicts, grid


def to_grid(flat: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(grid.shape, dtype=flat.dtype, device=flat.device)
    out[grid] = flat  # both row-major: a row's tokens stay in order
    return out


def policy_token_stats(model, batch: PaddedBatch, lengths: torch.Tensor, temperature: float, entropy: bool = False,
                       options: LogprobOptions | None = None):
    """Per-token log-probs of the response under ``model`` at ``temperature`` (B, R), and the entropy.

    Computed as every scorer does (:func:`dpo3d.scoring.logprobs.token_stats`: the LM head from the earliest
    response position on, in chunks); the entropy is a measurement, computed without gradients.
    """
    _, grid = response_grid(batch, lengths)
    stats = token_stats(model, batch, options, temperature=temperature, entropy=entropy)
    return to_grid(stats.logps, grid), None if stats.entropy is None else to_grid(stats.entropy, grid)


def token_values(model, batch: PaddedBatch, lengths: torch.Tensor) -> torch.Tensor:
    """V(state before each response token), (B, R)."""
    predicts, grid = response_grid(batch, lengths)
    values = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    return to_grid(values[..., 0][predicts].float(), grid)
