"""`--compile`: torch.compile of each decoder layer for the training passes. It must change time, not results:
the compiled layers' forward and backward match the eager ones (with gradient checkpointing too), one graph
serves every layer and a second, dynamic one every later length (more layers than dynamo's recompile limit of 8
would otherwise fall back to eager without a word), passes without gradients (generation with its KV cache, the
reference) stay eager, and what --compile cannot do is refused by name.

Tolerance, from the arithmetic: inductor fuses a layer's element-wise ops and may reorder its float32 sums. A
reordered sum of K terms moves by at most about K·u·Σ|terms| (u = 2^-24 ≈ 6e-8), i.e. K²·u of the largest term;
the tiny model's longest sums inside a layer are K = 64 (its MLP width), so ~2e-4 of a tensor's largest value in
the worst case and ~K^(1/2)·u ≈ 5e-7 for rounding errors of random sign, which is what a compiled sum shows. So
a tensor is compared element-wise to 1e-4 of its own largest absolute value: met with wide headroom by reordered
sums (any CPU's vector width orders them differently; the bound covers all), missed by a wrong graph (errors of
the size of the values themselves). No relative bound per element: gradients cancel, and a small element's
relative error is unbounded.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from dpo3d.data.run_log import read_log
from dpo3d.training.compiled import compile_layers, decoder_layers
from dpo3d.training.precision import enable_gradient_checkpointing

from .test_mixed_precision import dpo_run

SHARE = 1e-4  # of a tensor's largest absolute value (above)


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return bool(((got - want).abs() <= SHARE * want.abs().max()).all())


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def ids_of(length: int) -> torch.Tensor:
    return torch.randint(0, 500, (2, length), generator=torch.Generator().manual_seed(length))


@pytest.fixture(scope="module")
def ten_layers(tokenizer):
    from dpo3d.models.tiny import tiny_causal_lm

    return tiny_causal_lm(tokenizer, layers=10, seed=0)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_compiled_layers_give_the_eager_loss_and_gradients_with_one_graph_for_every_layer(ten_layers):
    compiled = copy.deepcopy(ten_layers)
    assert compile_layers(compiled) == 10
    before = graphs()
    want_loss, want_grads = loss_and_grads(ten_layers, ids_of(24))
    got_loss, got_grads = loss_and_grads(compiled, ids_of(24))
    assert graphs() - before == 1  # one graph for all ten layers: none fell back to eager
    assert close(got_loss, want_loss) and want_grads.keys() == got_grads.keys()
    assert all(close(got_grads[name], want) for name, want in want_grads.items())
    loss_and_grads(compiled, ids_of(30))  # another length: one dynamic-shape graph ...
    assert graphs() - before == 2
    again_loss, again_grads = loss_and_grads(compiled, ids_of(17))  # ... serves every later one
    assert graphs() - before == 2
    want_loss, want_grads = loss_and_grads(ten_layers, ids_of(17))
    assert close(again_loss, want_loss) and all(close(again_grads[n], w) for n, w in want_grads.items())

    frames = counters["frames"]["total"]
    with torch.no_grad():
        compiled(input_ids=ids_of(24))  # with its KV cache, as generation runs it
    compiled.generate(ids_of(24)[:, :4], max_new_tokens=3, do_sample=False)
    assert counters["frames"]["total"] == frames  # no pass without gradients went near dynamo


def test_compiled_layers_under_gradient_checkpointing_give_the_eager_gradients(tiny_model):
    compiled = copy.deepcopy(tiny_model)
    enable_gradient_checkpointing(compiled)
    compile_layers(compiled)
    compiled.train()
    want_loss, want_grads = loss_and_grads(tiny_model, ids_of(24))
    got_loss, got_grads = loss_and_grads(compiled, ids_of(24))
    assert close(got_loss, want_loss) and all(close(got_grads[n], w) for n, w in want_grads.items())


def test_a_model_without_decoder_layers_is_refused():
    with pytest.raises(ValueError, match="--compile: .*Linear.* no decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_sharded_training_refuses_compile():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from dpo3d.training import sharding

    with pytest.raises(ValueError, match="--compile is untried under FSDP"):
        sharding.check_supported(SimpleNamespace(distributed_type=DistributedType.FSDP), 0, False, compiled=True)
    sharding.check_supported(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU), 0, False, compiled=True)


def test_a_lora_model_compiles_its_base_models_layers(tiny_model):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    layers = decoder_layers(wrapped)
    assert len(layers) == 2
    assert type(layers[0].self_attn.q_proj).__module__.startswith("peft")  # the adapted layers, not a copy


def test_train_dpo_with_compile_logs_the_eager_runs_steps(tmp_path, tiny_model_dir):
    """Step 1's log-probs and gradient norm (its loss is ln 2 either way: the policy is the reference), and step
    2's loss, which reads the weights the first update wrote through the compiled graph."""
    plain = read_log(dpo_run(tmp_path, tiny_model_dir, "plain", lr=1e-3, max_steps=2) / "metrics.jsonl")
    compiled_out = dpo_run(tmp_path, tiny_model_dir, "compiled", lr=1e-3, max_steps=2, compile=True)
    compiled = read_log(compiled_out / "metrics.jsonl")
    for step, key in ((1, "grad_norm"), (1, "chosen_logp"), (1, "rejected_logp"), (2, "loss")):
        assert compiled[step][key] == pytest.approx(plain[step][key], rel=SHARE), (step, key)
    assert compiled[2]["loss"] != pytest.approx(compiled[1]["loss"], rel=SHARE)  # the update moved the loss
    assert '"compile": true' in (compiled_out / "run_config.json").read_text()
