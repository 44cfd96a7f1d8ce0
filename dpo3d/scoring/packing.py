"""Padding-free packing: a batch's sequences laid end to end, position ids restarting at 0 for each.

A padded batch of chosen and rejected responses spends a large share of its compute on padding
(a pair's sides differ in length, a batch's pairs more so). Packed, the sequences share rows
with no attention mask at all; transformers (>= 4.5x, the ``masking_utils`` mask builders) reads
the sequence boundaries from the position ids (wherever they do not go up by one) and gives each
sequence a causal mask of its own, the block-diagonal mask of a packed row, for eager, sdpa, flex
and flash attention alike. Two conditions: the 2D attention mask must be None and there must be no
KV cache (``use_cache=False``), or the position ids are ignored and every sequence attends to the
ones before it in its row. Whether a model honours this is checked once per model by
:mod:`dpo3d.scoring.logprobs` (packed vs padded on a small probe); one that does not is padded as before.

Rows: dense-mask attention (eager, sdpa) computes a (rows, W, W) score matrix whatever the mask,
so one row of all L tokens would cost L² where the padded batch costs B·T². Sequences are
therefore packed first-fit-decreasing into rows about as wide as the longest sequence T: of the
widths T .. 1.25·T (in steps of T/32) the one with the fewest positions in all (rows × W), so the
linear layers (most of the compute at these lengths) see only real tokens plus the rows' tails and
attention costs at most 1.25× per position what padding would. The bench's 16 sequences (longest
256) fill 10 rows of 272 (90% real tokens) instead of 11 of 256 (87%). Flash (varlen) and flex
attention skip masked blocks, so there the whole batch is one row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# attention implementations that skip what the block-diagonal mask hides (one row is cheapest)
SPARSE_ATTENTION = ("flash", "flex")
WIDEST_ROW = 1.25  # dense attention: rows at most this many times the longest sequence
WIDTH_STEPS = 32  # the row widths tried go up in steps of the longest sequence / this


@dataclass
class PackedBatch:
    """The packed rows and the way back to the padded batch's order.

    ``scored`` marks positions whose next token is scored; ``unpack`` maps row-major packed scored
    tokens back to the padded batch's row-major order: ``padded_flat = packed_flat[unpack]``.
    """

    input_ids: torch.Tensor  # (R, W)
    position_ids: torch.Tensor  # (R, W) restarting at 0 for each sequence (and for each row's filler)
    scored: torch.Tensor  # (R, W) bool
    unpack: torch.Tensor  # (N,)

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "position_ids": self.position_ids}


def row_width(attn_implementation: str | None, lengths: list[int]) -> int | None:
    """Widest row for an attention implementation: None (one row) where masked blocks are skipped,
    else the width from the longest sequence to WIDEST_ROW times it that packs the batch into the
    fewest positions (the narrower on a tie; see the module docstring)."""
    if any(name in (attn_implementation or "") for name in SPARSE_ATTENTION):
        return None
    longest = max(lengths)
    step = max(1, longest // WIDTH_STEPS)
    widths = range(longest, int(longest * WIDEST_ROW) + 1, step)
    return min(widths, key=lambda width: (len(_rows(lengths, width)) * width, width))


def _rows(lengths: list[int], width: int | None) -> list[list[int]]:
    """First-fit decreasing: each sequence (by index) into the first row with room for it."""
    if width is None:
        return [list(range(len(lengths)))]
    width = max(width, max(lengths))
    rows: list[list[int]] = []
    used: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, filled in enumerate(used):
            if filled + lengths[index] <= width:
                rows[row].append(index)
                used[row] += lengths[index]
                break
        else:
            rows.append([index])
            used.append(lengths[index])
    return rows


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor,
         width: int | None = None) -> PackedBatch:
    """Pack a padded batch (left or right padding; each row's real tokens contiguous) into rows of at most
    ``width`` tokens (at least the longest sequence; None: a single row). ``scored`` (B, T): the positions
    whose next token is scored (never a row's last real token)."""
    real = attention_mask.bool().cpu()
    lengths = real.sum(-1).tolist()
    if min(lengths) == 0:
        raise ValueError("cannot pack an empty sequence")
    n, t = real.shape
    columns = [torch.nonzero(real[row], as_tuple=True)[0] for row in range(n)]
    if any(int(c[-1] - c[0]) + 1 != len(c) for c in columns):
        raise ValueError("a row's real tokens are not contiguous")
    rows = _rows(lengths, width)
    wide = max(sum(lengths[i] for i in members) for members in rows)
    source = torch.full((len(rows), wide), -1, dtype=torch.long)
    positions = torch.zeros((len(rows), wide), dtype=torch.long)
    for r, members in enumerate(rows):
        # kept in batch order inside a row, so a single row keeps the padded batch's token order
        flat = torch.cat([row * t + columns[row] for row in sorted(members)])
        source[r, : len(flat)] = flat
        positions[r, : len(flat)] = torch.cat([torch.arange(lengths[row]) for row in sorted(members)])
        # the filler after the last sequence starts a sequence of its own: nothing real attends to it
        positions[r, len(flat):] = torch.arange(wide - len(flat))
    device = input_ids.device
    valid = (source >= 0).to(device)
    gather = source.clamp(min=0).to(device)
    packed_scored = scored.reshape(-1)[gather] & valid
    rank = torch.cumsum(scored.reshape(-1).long(), 0) - 1  # each scored token's index in the padded order
    order = rank[gather][packed_scored]
    return PackedBatch(input_ids.reshape(-1)[gather], positions.to(device), packed_scored, torch.argsort(order))
