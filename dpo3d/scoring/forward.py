"""How response log-probs are computed: the options (chunked LM head, packed sequences) and the
one forward that takes a path through them."""

from __future__ import annotations

from dataclasses import dataclass

from dpo3d.config.fields import option
from dpo3d.models.wrappers import unwrap
from dpo3d.scoring import packing
from dpo3d.scoring.batches import PaddedBatch, scored_positions
from dpo3d.scoring.heads import TokenStats, chunked_token_stats, logits_token_stats


@dataclass(frozen=True)
class LogprobOptions:
    """How response log-probs are computed (not what): the numbers agree either way, to rounding.

    ``head_chunk``: positions per pass through the LM head (:mod:`dpo3d.scoring.heads`; memory
    ``head_chunk x vocab`` instead of ``tokens x vocab``); None: the model's full logits.
    ``packing``: sequences packed into rows without padding (:mod:`dpo3d.scoring.packing`).
    Either falls back, with a warning, on a model where it does not reproduce the plain path.
    """

    head_chunk: int | None = option(  # 512: as fast as 1024 on the bench, ~300 MiB less at its peak
        512, "Positions per pass through the LM head: the logits are recomputed in backward, so memory grows with "
        "N x vocabulary, not tokens x vocabulary; 0: the model's full logits.", min=0, none_at=0)
    packing: bool = option(
        True, "Pack the batch's sequences into rows without padding (position ids restart per sequence); a model "
        "that does not honour it is padded.", flags=("--packing/--no-packing",))

    def __post_init__(self):
        if self.head_chunk is not None and self.head_chunk < 1:
            raise ValueError(f"head_chunk must be a positive number of positions or None, not {self.head_chunk}")


def forward_token_stats(model, batch: PaddedBatch, *, chunk: int | None, packed: bool, temperature: float = 1.0,
                        entropy: bool = False, log_sum_sq: bool = False, width: int | None | str = "auto",
                        hidden: bool = False) -> TokenStats:
    """One forward on the path given: the LM head in chunks of ``chunk`` positions (None: the full
    logits), the sequences ``packed`` into rows of ``width`` (``"auto"``: chosen for the attention
    implementation) or padded. Which path a model supports is decided in :mod:`dpo3d.scoring.features`."""
    scored = scored_positions(batch)
    layout = None
    if packed:
        lengths = batch.attention_mask.sum(-1).tolist()
        if width == "auto":
            width = packing.row_width(getattr(getattr(unwrap(model), "config", None), "_attn_implementation", None), lengths)
        layout = packing.pack(batch.input_ids, batch.attention_mask, scored, width)
        inputs, scored, ids = layout.inputs(), layout.scored, layout.input_ids
    else:
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
        ids = batch.input_ids
    targets = ids[:, 1:][scored[:, :-1]]
    if chunk:
        stats = chunked_token_stats(model, inputs, scored, targets, chunk, temperature, entropy, log_sum_sq, hidden)
    else:
        stats = logits_token_stats(model, inputs, scored, targets, temperature, entropy, log_sum_sq, hidden)
    return stats if layout is None else stats.select(layout.unpack)
