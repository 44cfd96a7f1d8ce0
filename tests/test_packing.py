"""Padding-free packing (dpo3d.scoring.packing): the rows it builds, and log-probs and gradients equal to the
padded batch's (left and right padding); a model that ignores packed position ids falls back to padding.

Tolerance: 1e-5 per sequence sum (float32; the same tokens through the same layers, in other rows).
"""

from __future__ import annotations

import pytest
import torch

from dpo3d.data.sequences import EncodedPair, encode_pair
from dpo3d.models.tiny import tiny_causal_lm
from dpo3d.scoring.batches import collate, scored_positions
from dpo3d.scoring.features import _SUPPORT
from dpo3d.scoring.forward import LogprobOptions, forward_token_stats
from dpo3d.scoring.logprobs import sequence_logps
from dpo3d.scoring.packing import pack, row_width

PADDED, PACKED = LogprobOptions(head_chunk=None, packing=False), LogprobOptions(head_chunk=None, packing=True)
PROMPT = [{"role": "user", "content": "What is 3 + 4?"}]
RESPONSES = ["7", "The answer is 7, since 3 + 4 = 7.", "It is eight.", ("Seven. Three and four make seven, as ever: count three fingers, then four more, and you "
                                         "hold up seven in all, which is the answer whatever the order of the two.")]


def sequences(tokenizer) -> list[EncodedPair]:
    prompts = [PROMPT, "Say 7.", PROMPT, [{"role": "user", "content": "Add three and four, please; show the work."}]]
    return [encode_pair(tokenizer, p, r) for p, r in zip(prompts, RESPONSES, strict=True)]


def test_rows_are_first_fit_decreasing_with_restarting_positions_and_a_way_back():
    # lengths 5, 3, 2, 4 (distinct token ids, so the way back is a checkable permutation)
    seqs = [EncodedPair([10, 11], [12, 13, 14]), EncodedPair([20], [21, 22]), EncodedPair([30], [31]),
            EncodedPair([40, 41], [42, 43])]
    for side in ("left", "right"):
        batch = collate(seqs, 0, side)
        scored = scored_positions(batch)
        packed = pack(batch.input_ids, batch.attention_mask, scored, width=5)
        # longest first: [0] | [3] | then 1 (3 tokens) opens row 3 and 2 (2 tokens) fills it
        assert packed.input_ids.tolist()[0] == [10, 11, 12, 13, 14]
        assert packed.input_ids.tolist()[1][:4] == [40, 41, 42, 43]
        assert packed.input_ids.tolist()[2] == [20, 21, 22, 30, 31]
        assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
        assert packed.scored.tolist() == [[False, True, True, True, False], [False, True, True, False, False],
                                          [True, True, False, True, False]]
        padded_targets = batch.input_ids[:, 1:][scored[:, :-1]]
        packed_targets = packed.input_ids[:, 1:][packed.scored[:, :-1]]
        assert packed_targets[packed.unpack].tolist() == padded_targets.tolist() == [12, 13, 14, 21, 22, 31, 42, 43]
        one_row = pack(batch.input_ids, batch.attention_mask, scored, width=None)
        assert one_row.input_ids.tolist() == [[10, 11, 12, 13, 14, 20, 21, 22, 30, 31, 40, 41, 42, 43]]
        assert one_row.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 0, 1, 2, 3]]
        assert one_row.unpack.tolist() == list(range(8))  # one row in batch order: already the padded order


def test_row_width_follows_the_attention_implementation():
    assert row_width("sdpa", [3, 9, 4]) == 9
    assert row_width("eager", [3, 9, 4]) == 9
    assert row_width("flash_attention_2", [3, 9, 4]) is None
    # 8 | 5 | 5 | 5 | 5 in rows of 8 is 40 positions; rows of 10 (1.25 x 8) take 8 | 5 5 | 5 5, 30 positions
    assert row_width("sdpa", [8, 5, 5, 5, 5]) == 10
    assert row_width("sdpa", [8, 5, 3]) == 8  # 8 | 5 3 in rows of 8 or 10: 2 rows either way, 16 positions at 8
    # the bench's 16 sequences: 10 rows of 272 (2,720 positions) instead of 11 of 256 (2,816)
    bench = [256, 236, 228, 228, 188, 164, 150, 146, 136, 129, 120, 110, 103, 97, 89, 80]
    assert row_width("sdpa", bench) == 272
    assert row_width("flex_attention", [3, 9, 4]) is None


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("chunk", [None, 5])
def test_packed_equals_padded(tiny_model, tokenizer, side, chunk):
    batch = collate(sequences(tokenizer), tokenizer.pad_token_id, side)
    seen = []
    hook = tiny_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            padded = sequence_logps(tiny_model, batch, LogprobOptions(head_chunk=chunk, packing=False))
            seen.clear()
            packed = sequence_logps(tiny_model, batch, LogprobOptions(head_chunk=chunk, packing=True))
    finally:
        hook.remove()
    # it did pack: no attention mask, fewer rows than sequences, no padding
    assert seen[-1].get("attention_mask") is None and seen[-1].get("use_cache") is False
    assert seen[-1]["input_ids"].shape[0] < batch.input_ids.shape[0]
    assert seen[-1]["input_ids"].numel() < batch.input_ids.numel()
    torch.testing.assert_close(packed.sum, padded.sum, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.mean, padded.mean, rtol=0, atol=1e-5)
    assert packed.count.tolist() == padded.count.tolist() == [len(s.response_ids) for s in sequences(tokenizer)]


def test_packed_gradients_equal_padded(tokenizer):
    model = tiny_causal_lm(tokenizer, seed=7)
    batch = collate(sequences(tokenizer), tokenizer.pad_token_id, "left")

    def grads(options):
        model.zero_grad(set_to_none=True)
        logps = sequence_logps(model, batch, options)
        (logps.sum * torch.tensor([1.0, -0.5, 2.0, 0.3])).sum().backward()  # rows weighted: order matters
        found = {name: p.grad.clone() for name, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return found

    padded, packed = grads(PADDED), grads(PACKED)
    assert _SUPPORT[model]["packing"] is True
    for name in padded:
        assert float((packed[name] - padded[name]).norm() / padded[name].norm()) < 1e-5, name


def test_a_model_that_ignores_packed_position_ids_falls_back_to_padding(tokenizer):
    from transformers import LlamaForCausalLM

    class PositionBlind(LlamaForCausalLM):  # an architecture that does not read sequence starts off position ids
        def forward(self, *args, position_ids=None, **kwargs):
            return super().forward(*args, **kwargs)

    source = tiny_causal_lm(tokenizer, seed=8)
    model = PositionBlind(source.config).eval()
    model.load_state_dict(source.state_dict())
    batch = collate(sequences(tokenizer), tokenizer.pad_token_id, "right")
    with torch.no_grad():
        with pytest.warns(UserWarning, match="packed sequences did not reproduce"):
            got = sequence_logps(model, batch, PACKED)
        padded = sequence_logps(model, batch, PADDED)
        forced = forward_token_stats(model, batch, chunk=None, packed=True).logps  # what packing would have given
        plain = forward_token_stats(model, batch, chunk=None, packed=False).logps
    assert _SUPPORT[model]["packing"] is False
    torch.testing.assert_close(got.sum, padded.sum, rtol=0, atol=0)
    assert float((forced - plain).abs().max()) > 1e-2


def test_nothing_to_pack_is_left_padded_as_is(tiny_model, tokenizer):
    same = [encode_pair(tokenizer, PROMPT, "7"), encode_pair(tokenizer, PROMPT, "8")]
    batch = collate(same, tokenizer.pad_token_id)
    assert bool(batch.attention_mask.bool().all())
    seen = []
    hook = tiny_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            sequence_logps(tiny_model, batch, PACKED)
    finally:
        hook.remove()
    assert seen[-1]["attention_mask"] is not None and seen[-1]["input_ids"].shape == batch.input_ids.shape


def count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_settling_runs_the_same_forwards_whether_or_not_a_process_probed_before(tokenizer):
    # under FSDP a forward is a collective: a process that probed lazily in its reference pass and one that
    # did not must still run the same forwards when the loop settles the verdicts (the hang CI once hit)
    from dpo3d.scoring.features import settle_support

    cold, warm = tiny_causal_lm(tokenizer, seed=3), tiny_causal_lm(tokenizer, seed=3)
    batch = collate(sequences(tokenizer), tokenizer.pad_token_id, "right")
    with torch.no_grad():
        sequence_logps(warm, batch, LogprobOptions(head_chunk=4, packing=True))  # probes lazily
    assert set(_SUPPORT[warm]) == {"chunked", "packing"} and cold not in _SUPPORT
    counts = {name: count_forwards(model) for name, model in (("cold", cold), ("warm", warm))}
    verdicts = {name: settle_support(model, LogprobOptions(head_chunk=4, packing=True))
                for name, model in (("cold", cold), ("warm", warm))}
    assert counts["cold"] == counts["warm"] == [4]  # plain + chunked, plain + packed: two per feature
    assert verdicts["cold"] == verdicts["warm"] == {"chunked": True, "packing": True}
    # the verdicts are kept: scoring afterwards runs one forward, no probe
    with torch.no_grad():
        sequence_logps(cold, batch, LogprobOptions(head_chunk=4, packing=True))
    assert counts["cold"] == [5]
    # only the features asked for are probed
    assert settle_support(cold, LogprobOptions(head_chunk=None, packing=True)) == {"packing": True}
    assert counts["cold"] == [7]


def test_settling_keeps_the_verdict_every_process_agrees_on(tokenizer):
    # one process where packing failed its probe makes every process pad
    from dpo3d.scoring.features import settle_support

    model = tiny_causal_lm(tokenizer, seed=4)
    asked: list[list[bool]] = []

    def another_process_disagrees(flags: list[bool]) -> list[bool]:
        asked.append(list(flags))
        return [flags[0], False]

    with pytest.warns(UserWarning, match="packed sequences did not reproduce"):
        verdict = settle_support(model, LogprobOptions(head_chunk=4, packing=True), agree=another_process_disagrees)
    assert asked == [[True, True]]  # this process's own probes passed
    assert verdict == {"chunked": True, "packing": False} == _SUPPORT[model]
    batch = collate(sequences(tokenizer), tokenizer.pad_token_id, "right")
    with torch.no_grad():
        got = sequence_logps(model, batch, LogprobOptions(head_chunk=None, packing=True)).sum
        padded = forward_token_stats(model, batch, chunk=None, packed=False).logps
    rows = torch.nonzero(scored_positions(batch), as_tuple=True)[0]
    torch.testing.assert_close(got, torch.zeros(4).index_add(0, rows, padded), rtol=0, atol=0)  # padded, bit for bit


@pytest.mark.slow
def test_packing_in_bf16_is_judged_against_bf16_rounding_not_fp32s(monkeypatch):
    """Before: the probe's fixed 5e-2-nat tolerance refused packing on SmolLM2 in bf16 (packed vs padded up to
    0.17 nats at a log-prob of -10, while the padded path itself is 0.18 nats off its own fp32 log-probs) and
    every bf16 scoring pass fell back to padding. The tolerance is now 8 unit roundoffs of the log-prob
    (bf16: 8 · 2^-8 · max(|log p|, 1)): correct packing measured at ≤ 4.5 of them, a packing that lets the
    second sequence see the first (position ids that do not restart) at 19-205 of them."""
    from dpo3d.models.loading import BUNDLED, LoadOptions, load_model_and_tokenizer
    from dpo3d.scoring import features, packing

    model, _ = load_model_and_tokenizer(BUNDLED, LoadOptions(dtype=torch.bfloat16))
    model.eval()
    cpu = torch.device("cpu")
    assert features._probe(model, "packing", cpu) is True
    assert features._probe(model, "chunked", cpu) is True

    def blind(self):  # the position ids run on across the row: one long sequence, no boundary
        return {"input_ids": self.input_ids, "position_ids": torch.arange(self.input_ids.shape[1]).expand_as(self.input_ids)}

    monkeypatch.setattr(packing.PackedBatch, "inputs", blind)
    assert features._probe(model, "packing", cpu) is False


def test_agreement_tolerance_by_hand():
    from dpo3d.scoring.features import agrees

    plain = torch.tensor([-10.0, -0.5])
    # bf16: 8 · 2^-8 = 0.03125 per unit of |log p|, |log p| floored at 1: bounds 0.3125 and 0.03125
    assert agrees(torch.tensor([-10.30, -0.53]), plain, torch.bfloat16)
    assert not agrees(torch.tensor([-10.35, -0.5]), plain, torch.bfloat16)
    assert not agrees(torch.tensor([-10.0, -0.54]), plain, torch.bfloat16)
    # fp16: 8 · 2^-11 = 0.0039 per unit: 0.039 at -10
    assert agrees(torch.tensor([-10.03, -0.5]), plain, torch.float16)
    assert not agrees(torch.tensor([-10.05, -0.5]), plain, torch.float16)
    # float32: 1e-3 absolute, whatever the log-prob
    assert agrees(torch.tensor([-10.0009, -0.5]), plain, None)
    assert not agrees(torch.tensor([-10.002, -0.5]), plain, None)
