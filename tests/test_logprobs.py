"""Sequence log-probs: response tokens only, padding-invariant, one concatenated forward."""

from __future__ import annotations

import pytest
import torch

from dpo3d.data.sequences import EncodedPair, encode_pair
from dpo3d.scoring.batches import collate
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import score_records, sequence_logps
from dpo3d.scoring.pair_logps import pair_logps

PROMPT = [{"role": "user", "content": "What is 3 + 4?"}]


def reference_logp(model, pair: EncodedPair) -> float:
    """The textbook computation: one unpadded sequence, full log-softmax, response positions summed."""
    ids = torch.tensor([pair.prompt_ids + pair.response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    start = len(pair.prompt_ids)
    return sum(float(logprobs[t - 1, ids[0, t]]) for t in range(start, ids.shape[1]))


@pytest.fixture
def pairs(tokenizer):
    responses = ["7", "The answer is 7, since 3 + 4 = 7.", "It is eight."]
    return [encode_pair(tokenizer, PROMPT, r) for r in responses]


def test_sum_matches_unpadded_log_softmax(tiny_model, tokenizer, pairs):
    batch = collate(pairs, tokenizer.pad_token_id, "right")
    with torch.no_grad():
        got = sequence_logps(tiny_model, batch)
    for row, pair in enumerate(pairs):
        assert float(got.sum[row]) == pytest.approx(reference_logp(tiny_model, pair), abs=1e-4)
        assert int(got.count[row]) == len(pair.response_ids)
        assert float(got.mean[row]) == pytest.approx(float(got.sum[row]) / len(pair.response_ids), rel=1e-6)


def test_left_and_right_padding_agree(tiny_model, tokenizer, pairs):
    with torch.no_grad():
        right = sequence_logps(tiny_model, collate(pairs, tokenizer.pad_token_id, "right"))
        left = sequence_logps(tiny_model, collate(pairs, tokenizer.pad_token_id, "left"))
    torch.testing.assert_close(left.sum, right.sum, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(left.count, right.count)


def test_prompt_tokens_are_not_scored(tiny_model, tokenizer):
    short = encode_pair(tokenizer, "Q: 1+1?\nA:", " 2")
    longer = encode_pair(tokenizer, "Question, asked at some length: what is 1+1?\nA:", " 2")
    assert short.response_ids == longer.response_ids
    with torch.no_grad():
        got = sequence_logps(tiny_model, collate([short, longer], tokenizer.pad_token_id))
    assert got.count.tolist() == [len(short.response_ids)] * 2
    assert float(got.sum[0]) != pytest.approx(float(got.sum[1]))  # the context differs, the count does not


def test_pair_forward_equals_separate_forwards(tiny_model, tokenizer, pairs):
    chosen, rejected = pairs[:2], [pairs[2], pairs[0]]
    with torch.no_grad():
        got_chosen, got_rejected = pair_logps(tiny_model, chosen, rejected, tokenizer.pad_token_id)
    for got, pair in zip(list(got_chosen.sum) + list(got_rejected.sum), chosen + rejected, strict=True):
        assert float(got) == pytest.approx(reference_logp(tiny_model, pair), abs=1e-4)


def test_logps_are_differentiable(tiny_model, tokenizer, pairs):
    got = sequence_logps(tiny_model, collate(pairs, tokenizer.pad_token_id))
    got.sum.sum().backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    tiny_model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("side", ["left", "right"])
def test_every_path_equals_a_plain_forwards_full_logits(tiny_model, tokenizer, pairs, side):
    """The default path (logits_to_keep, chunked head, packed rows), each feature alone and the plain
    path, against one ordinary forward's logits at every position, log-softmaxed in float64."""
    batch = collate(pairs, tokenizer.pad_token_id, side)
    with torch.no_grad():
        logits = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids).logits
    assert logits.shape[1] == batch.input_ids.shape[1]  # every position through the head
    next_logps = torch.log_softmax(logits[:, :-1].double(), -1).gather(2, batch.input_ids[:, 1:, None])[..., 0]
    expected = (next_logps * batch.response_mask[:, 1:]).sum(-1)
    for options in (None, LogprobOptions(head_chunk=2, packing=False), LogprobOptions(head_chunk=None, packing=True),
                    LogprobOptions(head_chunk=None, packing=False)):
        with torch.no_grad():
            got = sequence_logps(tiny_model, batch, options)
        # float32 rounding of the head's matmul: measured at most 1.7e-5 on sums of about -180
        torch.testing.assert_close(got.sum.double(), expected, atol=1e-4, rtol=0, msg=str(options))


def test_logprob_options_refuse_a_chunk_of_no_positions():
    assert LogprobOptions() == LogprobOptions(head_chunk=512, packing=True)
    with pytest.raises(ValueError, match="head_chunk"):
        LogprobOptions(head_chunk=0)


def test_score_records_is_batch_size_invariant_and_ordered(tiny_model, tokenizer):
    records = [
        {"prompt": PROMPT, "chosen": "7", "rejected": "It is eight, I think."},
        {"prompt": "Say hi.", "completion": "hi"},
        {"prompt": PROMPT, "chosen": "Seven: 3 + 4 = 7.", "rejected": "9"},
    ]
    one = score_records(tiny_model, tokenizer, records, batch_size=1)
    three = score_records(tiny_model, tokenizer, records, batch_size=3)
    assert set(one[0]) == {
        "chosen_logp", "rejected_logp", "chosen_logp_mean", "rejected_logp_mean", "chosen_tokens", "rejected_tokens"
    }
    assert set(one[1]) == {"completion_logp", "completion_logp_mean", "completion_tokens"}
    for a, b in zip(one, three, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-4)
    # record order is kept although batches are built by length
    assert one[2]["rejected_tokens"] < one[0]["rejected_tokens"]


def test_empty_response_after_truncation_is_an_error(tiny_model, tokenizer):
    pair = EncodedPair(prompt_ids=[1, 2, 3], response_ids=[])
    with pytest.raises(ValueError, match="no response tokens"):
        sequence_logps(tiny_model, collate([pair], tokenizer.pad_token_id))
