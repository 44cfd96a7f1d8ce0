"""Reward models: a scalar head on a causal-LM backbone, saved as a sequence-classification folder.

``load_reward_model`` starts one from any causal LM (the head is new) or loads a
trained one (a folder written by ``dpo3d train-rm``). The reward of a
(prompt, response) is the head's value at the sequence's last real token — the
end-of-turn token of the response.

Padding: Hugging Face's sequence-classification models pool at the last token
that is *not* the pad token. SmolLM2 pads with its end-of-turn token, which
would move the pooling one token back; so a reward model gets a pad token that
never ends a response (:func:`reward_pad_id`), written into its config and
tokenizer, and any Hugging Face user of the checkpoint pools where we do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from dpo3d.data.sequences import EncodedPair, encode_pair
from dpo3d.models.loading import ADAPTER_CONFIG, LoadOptions, load_pretrained, load_tokenizer
from dpo3d.scoring.batches import collate, length_sorted_batches


def reward_pad_id(tokenizer) -> int:
    """A pad id that is not the end-of-turn token (the last token of every response)."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return tokenizer.pad_token_id
    for token_id in tokenizer.all_special_ids:
        if token_id not in (eos, tokenizer.bos_token_id):
            return token_id
    raise ValueError("the tokenizer has no special token to pad with besides its end-of-turn token")


def is_reward_model(spec: str) -> bool:
    """Whether a model folder already holds a sequence-classification (reward) model, or a LoRA
    adapter of one (``dpo3d train-rm --lora-r``)."""
    import json

    path = Path(spec).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        return json.loads((path / ADAPTER_CONFIG).read_text()).get("task_type") == "SEQ_CLS"
    if not (path / "config.json").is_file():
        return False

    architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def load_reward_model(spec: str, options: LoadOptions = LoadOptions()):
    """(reward model, tokenizer): a trained reward model, or a new scalar head on a causal LM."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(spec, options)
    pad_id = reward_pad_id(tokenizer)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    model = load_pretrained(AutoModelForSequenceClassification, spec, options, num_labels=1)
    model.config.pad_token_id = pad_id
    model.eval()
    return model, tokenizer


def sequence_rewards(model, sequences: Sequence[EncodedPair], pad_id: int) -> torch.Tensor:
    """Rewards, shape ``(n,)``, differentiable; right padding so the pooling sees the real last token."""
    device = next(model.parameters()).device
    batch = collate(list(sequences), pad_id, "right").to(device)
    output = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return output.logits[:, 0].float()


@torch.no_grad()
def score_sequences(model, sequences: Sequence[EncodedPair], pad_id: int, batch_size: int = 16,
                    on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Rewards of many sequences without gradients, batched by length, in input order."""
    rewards = torch.zeros(len(sequences))
    for indices in length_sorted_batches([len(s) for s in sequences], batch_size):
        rewards[torch.tensor(indices)] = sequence_rewards(model, [sequences[i] for i in indices], pad_id).cpu()
        if on_batch is not None:
            on_batch(len(indices))
    return rewards


def reward_of_records(model, tokenizer, records: Sequence[dict], max_length: int | None = None, batch_size: int = 16,
                      on_batch: Callable[[int], None] | None = None) -> list[float]:
    """The reward of each record's (prompt, completion)."""
    encoded = [encode_pair(tokenizer, record["prompt"], record["completion"], max_length) for record in records]
    return score_sequences(model, encoded, tokenizer.pad_token_id, batch_size, on_batch).tolist()
