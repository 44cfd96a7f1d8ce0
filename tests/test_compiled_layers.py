"""`--compile`: torch.compile of each decoder layer for the training passes. It must change time, not results:
the compiled layers' forward and backward match the eager ones, passes without gradients (generation with its
KV cache, the probes, the reference) stay eager, and a model without decoder layers is refused by name.

Tolerance, from the arithmetic: inductor fuses a layer's element-wise ops and may reorder its float32 sums. A
reordered sum of K terms differs by at most about K·u·Σ|terms| (u = 2^-24 ≈ 6e-8); the tiny model's longest
sums inside a layer are K = 64 (its MLP width; hidden size 32, sequences under 64 tokens), so ~4e-6 relative per
layer, ~1e-5 over two layers and the head. rel 1e-4 leaves 10x headroom on every CPU (AVX2, AVX-512 or AMX
kernels order their sums differently, which this bound covers) and still catches a wrong graph (errors of order 1).
"""

from __future__ import annotations

import copy

import pytest
import torch

from dpo3d.data.run_log import read_log
from dpo3d.training.compiled import compile_layers, decoder_layers

from .test_mixed_precision import dpo_run

RTOL = 1e-4


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_compiled_layers_give_the_eager_loss_and_gradients_and_stay_eager_without_gradients(tiny_model):
    eager = tiny_model
    compiled = copy.deepcopy(eager)
    assert compile_layers(compiled) == 2
    ids = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    want_loss, want_grads = loss_and_grads(eager, ids)
    got_loss, got_grads = loss_and_grads(compiled, ids)
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=RTOL)
    assert want_grads.keys() == got_grads.keys()
    for name, want in want_grads.items():
        assert torch.allclose(got_grads[name], want, rtol=RTOL, atol=RTOL * want.abs().max().item()), name

    traced: list[bool] = []
    hook = decoder_layers(compiled)[0].mlp.register_forward_hook(
        lambda module, args, out: traced.append(torch.compiler.is_compiling()))
    with torch.no_grad():
        compiled(input_ids=ids)  # with its KV cache, as generation runs it
    compiled.generate(ids[:, :4], max_new_tokens=3, do_sample=False)
    assert traced and not any(traced)  # eager: no pass without gradients went through dynamo
    hook.remove()


def test_a_model_without_decoder_layers_is_refused():
    with pytest.raises(ValueError, match="--compile: .*Linear.* no decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_train_dpo_with_compile_logs_the_eager_runs_first_step(tmp_path, tiny_model_dir):
    plain = read_log(dpo_run(tmp_path, tiny_model_dir, "plain", lr=1e-3, max_steps=1) / "metrics.jsonl")
    compiled_out = dpo_run(tmp_path, tiny_model_dir, "compiled", lr=1e-3, max_steps=1, compile=True)
    compiled = read_log(compiled_out / "metrics.jsonl")
    for key in ("loss", "grad_norm", "chosen_logp", "rejected_logp"):
        assert compiled[1][key] == pytest.approx(plain[1][key], rel=RTOL), key
    assert '"compile": true' in (compiled_out / "run_config.json").read_text()


def test_a_lora_model_compiles_its_base_models_layers(tiny_model):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    layers = decoder_layers(wrapped)
    assert len(layers) == 2
    assert type(layers[0].self_attn.q_proj).__module__.startswith("peft")  # the adapted layers, not a copy
