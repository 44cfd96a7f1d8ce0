"""The chunked LM head (dpo3d.scoring.heads): the same log-probs, gradients, entropy and log Σp² as the
full logits, without ever keeping a tokens x vocabulary tensor for backward; through DDP, peft, accelerate.

Tolerances: float32 log-probs agree with a float64 log-softmax to 1e-5 per token (the float32 log-
softmax over 49,152 logits rounds at ~1e-6); gradients to 1e-5 in relative norm, per
parameter (a sum over chunks instead of one matmul; both against a float64 backward too); bf16 autocast is compared with the full path under the same autocast, to 2e-2 per token
(bf16 logits round at ~4e-3 of their size) and to 2e-2 relative on the gradients' norm.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dpo3d.data.sequences import encode_pair
from dpo3d.models.tiny import tiny_causal_lm
from dpo3d.models.wrappers import unwrap
from dpo3d.scoring.batches import collate, scored_positions
from dpo3d.scoring.features import _SUPPORT
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.heads import ChunkedHeadLogps, HeadTransform, head_transform
from dpo3d.scoring.logprobs import sequence_logps, token_stats

PROMPT = [{"role": "user", "content": "What is 3 + 4?"}]
FULL = LogprobOptions(head_chunk=None, packing=False)
RESPONSES = ["7", "The answer is 7, since 3 + 4 = 7. Three plus four makes seven, which is the sum asked for here.",
             "It is eight, I believe, or maybe nine; arithmetic was never my strong suit, to be honest with you."]


def chunked(chunk: int) -> LogprobOptions:
    return LogprobOptions(head_chunk=chunk, packing=False)


@pytest.fixture
def batch(tokenizer):
    return collate([encode_pair(tokenizer, PROMPT, r) for r in RESPONSES], tokenizer.pad_token_id, "right")


def float64_stats(model, batch):
    """By hand: the decoder's last hidden states, the tied head in float64, a full log-softmax."""
    with torch.no_grad():
        hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids).last_hidden_state
        logits = hidden.double() @ model.get_output_embeddings().weight.double().t()
    scored = scored_positions(batch)
    log_probs = torch.log_softmax(logits[scored], dim=-1)
    targets = batch.input_ids[:, 1:][scored[:, :-1]]
    probs = log_probs.exp()
    return (log_probs.gather(1, targets[:, None])[:, 0], -(probs * log_probs).sum(-1),
            torch.log((probs * probs).sum(-1)))


def grads(model, batch, options, **kwargs):
    model.zero_grad(set_to_none=True)
    sequence_logps(model, batch, options).sum.sum().backward(**kwargs)
    if options.head_chunk:  # the chunked head ran: it did not fall back to the full logits
        assert _SUPPORT[unwrap(model)]["chunked"] is True
    found = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return found


def test_chunked_equals_full_and_float64_for_chunks_below_at_and_above_the_token_count(tiny_model, batch):
    tokens = int(scored_positions(batch).sum())
    expected, _, _ = float64_stats(tiny_model, batch)
    with torch.no_grad():
        full = token_stats(tiny_model, batch, FULL).logps
    assert (full.double() - expected).abs().max() < 1e-5
    for chunk in (1, 7, tokens, tokens + 50):
        with torch.no_grad():
            got = token_stats(tiny_model, batch, chunked(chunk)).logps
        assert got.shape == (tokens,)
        assert (got.double() - expected).abs().max() < 1e-5, chunk
        assert (got - full).abs().max() < 1e-5, chunk


def test_entropy_and_log_sum_of_squares_match_the_hand_computation(tiny_model, batch):
    _, entropy, log_sum_sq = float64_stats(tiny_model, batch)
    for options in (chunked(5), FULL):
        with torch.no_grad():
            got = token_stats(tiny_model, batch, options, entropy=True, log_sum_sq=True)
        assert (got.entropy.double() - entropy).abs().max() < 1e-4  # entropies here are ~10.8 nats
        assert (got.log_sum_sq.double() - log_sum_sq).abs().max() < 1e-4


def test_temperature_divides_the_logits(tiny_model, batch):
    with torch.no_grad():
        got = token_stats(tiny_model, batch, chunked(4), temperature=0.7, entropy=True)
        full = token_stats(tiny_model, batch, FULL, temperature=0.7, entropy=True)
        plain = token_stats(tiny_model, batch, FULL)
    assert (got.logps - full.logps).abs().max() < 1e-5
    assert (got.entropy - full.entropy).abs().max() < 1e-4
    assert (got.logps - plain.logps).abs().max() > 1e-3  # the temperature did change them


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_gradients_equal_the_full_paths_for_every_parameter_including_the_tied_embedding(tokenizer, batch):
    import copy

    model = tiny_causal_lm(tokenizer, seed=1)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    full = grads(model, batch, FULL)
    got = grads(model, batch, chunked(6))
    assert set(got) == {name for name, _ in model.named_parameters()} == set(full)
    # by hand in float64: the summed response log-probs through the whole model
    exact = copy.deepcopy(model).double()
    scored = scored_positions(batch)
    hidden = exact.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         position_ids=batch.position_ids).last_hidden_state
    log_probs = torch.log_softmax(exact.lm_head(hidden)[scored], -1)
    log_probs.gather(1, batch.input_ids[:, 1:][scored[:, :-1]][:, None]).sum().backward()
    for name, param in exact.named_parameters():  # measured: chunked <= 3.4e-6, full <= 6.9e-7
        assert relative(got[name], param.grad) < 1e-5, name
        assert relative(full[name], param.grad) < 1e-5, name
        assert relative(got[name], full[name]) < 1e-5, name


def test_the_function_has_exact_gradients_with_bias_scale_softcap_and_temperature():
    """gradcheck in float64 on a small head: every branch of the backward (bias, a multiplier, tanh
    soft-capping, a temperature), against finite differences; and the forward against log_softmax."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randint(0, 11, (7,), generator=generator)
    transform = HeadTransform(multiplier=1.7, softcap=2.0, temperature=0.8)

    def logps(h, w, b):
        return ChunkedHeadLogps.apply(h, w, b, targets, transform, 3, False, False)[0]

    assert torch.autograd.gradcheck(logps, (hidden, weight, bias))
    z = torch.tanh(F.linear(hidden, weight, bias) * 1.7 / 2.0) * 2.0 / 0.8
    expected = torch.log_softmax(z, -1).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(logps(hidden, weight, bias).double(), expected, rtol=0, atol=1e-6)


def test_autograd_saves_no_vocabulary_sized_tensor(tiny_model, batch):
    tokens, vocab = int(scored_positions(batch).sum()), tiny_model.config.vocab_size
    assert tokens > tiny_model.config.hidden_size  # so that the (vocab, hidden) weight is below tokens x vocab

    def largest_saved(options) -> int:
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            token_stats(tiny_model, batch, options)
        return max(sizes)

    assert largest_saved(FULL) >= tokens * vocab  # the measurement sees what the full path keeps
    assert largest_saved(chunked(8)) < tokens * vocab
    assert largest_saved(chunked(8)) <= vocab * tiny_model.config.hidden_size  # the weight itself


def test_bf16_autocast_within_tolerance(tokenizer, batch):
    model = tiny_causal_lm(tokenizer, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads(model, batch, chunked(5))
        full = grads(model, batch, FULL)
        with torch.no_grad():
            logps = token_stats(model, batch, chunked(5)).logps
            full_logps = token_stats(model, batch, FULL).logps
    with torch.no_grad():
        fp32 = token_stats(model, batch, FULL).logps
    assert logps.dtype == torch.float32
    assert (logps - full_logps).abs().max() < 2e-2
    assert (logps - fp32).abs().max() < 5e-2
    for name in full:
        assert relative(got[name], full[name]) < 2e-2, name


def test_under_ddp_gradients_match_the_bare_model(tokenizer, batch, tmp_path):
    """A real DistributedDataParallel (gloo, one process): the forward goes through the wrapper and the
    reducer's hooks fire; also with find_unused_parameters, which traces the graph from the outputs."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    bare = tiny_causal_lm(tokenizer, seed=3)
    expected = grads(bare, batch, FULL)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for find_unused in (False, True):
            model = tiny_causal_lm(tokenizer, seed=3)
            wrapped = DistributedDataParallel(model, find_unused_parameters=find_unused)
            got = grads(wrapped, batch, chunked(6))
            assert set(got) == {f"module.{name}" for name in expected}
            for name, grad in expected.items():
                assert relative(got[f"module.{name}"], grad) < 1e-5, name
    finally:
        dist.destroy_process_group()


def test_lora_wrapped_model_gets_the_full_paths_adapter_gradients(tokenizer, batch):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_causal_lm(tokenizer, seed=4), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():  # B starts at 0: give it values so the gradients reach A too
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(len(name)))
    full, got = grads(model, batch, FULL), grads(model, batch, chunked(6))
    assert got.keys() == full.keys() and all("lora_" in name for name in got)
    for name in full:
        assert relative(got[name], full[name]) < 1e-5, name


def test_accelerate_prepared_model_with_bf16_autocast(tokenizer, batch, tmp_path):
    from dpo3d.training.run_folder import make_accelerator

    accelerator, _ = make_accelerator(True, "bf16", "none", tmp_path)
    model = accelerator.prepare(tiny_causal_lm(tokenizer, seed=5))  # its forward now runs under bf16 autocast
    try:
        full, got = grads(model, batch, FULL), grads(model, batch, chunked(6))
        with torch.no_grad():
            logps, full_logps = token_stats(model, batch, chunked(6)).logps, token_stats(model, batch, FULL).logps
    finally:
        accelerator.free_memory()
    assert (logps - full_logps).abs().max() < 2e-2
    for name in full:
        assert relative(got[name], full[name]) < 2e-2, name


def _tiny(kind: str):
    """Tiny models of the architectures whose head output is transformed: Gemma 2 (soft-capping),
    Granite (logits / logits_scaling), Cohere (logits * logit_scale); extreme values so it shows."""
    import transformers

    sizes = {"vocab_size": 300, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "pad_token_id": 0}
    if kind == "gemma2":
        config = transformers.Gemma2Config(**sizes, final_logit_softcapping=0.5, attn_logit_softcapping=None)
        cls = transformers.Gemma2ForCausalLM
    elif kind == "granite":
        config, cls = transformers.GraniteConfig(**sizes, logits_scaling=0.25), transformers.GraniteForCausalLM
    else:
        config, cls = transformers.CohereConfig(**sizes, logit_scale=3.0), transformers.CohereForCausalLM
    torch.manual_seed(0)
    return cls(config).eval()


@pytest.mark.parametrize("kind", ["gemma2", "granite", "cohere"])
def test_head_transforms_of_other_architectures_are_reproduced(kind):
    from dpo3d.scoring.batches import PaddedBatch

    model = _tiny(kind)
    transform = head_transform(model)
    assert (transform.multiplier, transform.softcap) == {"gemma2": (1.0, 0.5), "granite": (4.0, None),
                                                         "cohere": (3.0, None)}[kind]
    ids = torch.tensor([[5, 17, 230, 42, 8, 99, 7], [3, 250, 11, 64, 0, 0, 0]])
    mask = (torch.arange(7) < torch.tensor([[7], [4]])).long()
    response = torch.zeros_like(mask, dtype=torch.bool)
    response[0, 2:], response[1, 1:4] = True, True
    batch = PaddedBatch(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), response)
    full = grads(model, batch, FULL)
    got = grads(model, batch, chunked(2))
    assert _SUPPORT[model]["chunked"] is True  # reproduced, not fallen back to the full logits
    for name in full:
        assert relative(got[name], full[name]) < 1e-5, name
    with torch.no_grad():
        plain = token_stats(model, batch, FULL, entropy=True, log_sum_sq=True)
        mine = token_stats(model, batch, chunked(2), entropy=True, log_sum_sq=True)
    for a, b in ((mine.logps, plain.logps), (mine.entropy, plain.entropy), (mine.log_sum_sq, plain.log_sum_sq)):
        assert (a - b).abs().max() < 1e-5


def test_a_head_transform_it_does_not_know_falls_back_to_the_full_logits(tokenizer, batch):
    from transformers import LlamaForCausalLM

    class DoubledLogits(LlamaForCausalLM):  # some post-head arithmetic no config field declares
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    source = tiny_causal_lm(tokenizer, seed=6)
    model = DoubledLogits(source.config).eval()
    model.load_state_dict(source.state_dict())
    with pytest.warns(UserWarning, match="chunked LM head did not reproduce"):
        with torch.no_grad():
            got = token_stats(model, batch, chunked(4)).logps
    assert _SUPPORT[model]["chunked"] is False
    with torch.no_grad():
        full = token_stats(model, batch, FULL).logps
        undoubled = token_stats(source, batch, FULL).logps
    assert (got - full).abs().max() == 0  # the full logits, doubling included
    assert (got - undoubled).abs().max() > 1e-2
