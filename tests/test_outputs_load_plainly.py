"""dpo3d's outputs load outside dpo3d: a full model, a LoRA adapter and a reward model, each with plain
transformers / peft only, computing what dpo3d's own loader computes."""

from __future__ import annotations

import json

import torch

from dpo3d.judges.reward_model import load_reward_model
from dpo3d.models import lora
from dpo3d.models.loading import BUNDLED, bundled_folder, load_causal_lm
from dpo3d.models.lora import LoRAConfig
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.rm import RMRunConfig, train_rm
from dpo3d.watch.probe_responses import ProbeResponseConfig

from .test_train_dpo import write_pairs


def loop(tmp_path, name: str) -> LoopConfig:
    return LoopConfig(out=tmp_path / name, lr=5e-3, batch_size=2, grad_accum=1, max_steps=2, warmup_ratio=0.0,
                      schedule="constant")


def ids(tokenizer) -> torch.Tensor:
    return tokenizer("The answer is 42.", return_tensors="pt")["input_ids"]


def test_the_bundled_model_is_recorded_as_a_folder_plain_peft_resolves():
    recorded = lora.base_reference(BUNDLED)
    assert recorded == str(bundled_folder().resolve())
    with open(f"{recorded}/config.json") as handle:
        assert json.load(handle)["model_type"] == "llama"


def test_full_model_and_adapter_load_with_plain_transformers_and_peft(tmp_path, tiny_model_dir, tokenizer):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    full = train_dpo(DPORunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop(tmp_path, "full"), probe_size=2,
                                  probe_responses=ProbeResponseConfig(max_new_tokens=8)))
    adapted = train_dpo(DPORunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop(tmp_path, "lora"), probe_size=2,
                                     lora=LoRAConfig(r=4), probe_responses=ProbeResponseConfig(max_new_tokens=8)))
    x = ids(tokenizer)
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(full.out).eval()
        assert torch.allclose(plain(x).logits, load_causal_lm(str(full.out))(x).logits, atol=1e-5)
        config = json.loads((adapted.out / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
        peft_model = AutoPeftModelForCausalLM.from_pretrained(adapted.out).eval()
        # dpo3d merges the adapter into the weights; peft adds it beside them: rounding apart, one function
        assert torch.allclose(peft_model(x).logits, load_causal_lm(str(adapted.out))(x).logits, atol=1e-4)


def test_reward_model_loads_with_plain_transformers(tmp_path, tiny_model_dir, tokenizer):
    from transformers import AutoModelForSequenceClassification

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    result = train_rm(RMRunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop(tmp_path, "rm")))
    x = ids(tokenizer)
    with torch.no_grad():
        plain = AutoModelForSequenceClassification.from_pretrained(result.out).eval()
        ours, _ = load_reward_model(str(result.out))
        assert plain.config.num_labels == 1
        assert torch.allclose(plain(x).logits, ours(x).logits, atol=1e-5)
