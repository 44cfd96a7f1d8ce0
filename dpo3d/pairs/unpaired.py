"""Unpaired preference examples (TRL's ``{prompt, completion, label}``, KTO's data) as the pairs a training run reads.

KTO scores each example on its own against a reference point, so an example needs no partner
answering the same prompt. The registry's ``kto`` loss takes pairs whose two sides it scores apart
(chosen: desirable, rejected: undesirable); here the k-th desirable example is set beside the k-th
undesirable one, each with its own prompt (``rejected_prompt`` carries the undesirable's). With
unequal counts the shorter side is cycled, so every example is used at least once and each batch
holds as many desirable as undesirable examples (the balance TRL's ``desirable_weight`` /
``undesirable_weight`` otherwise restore). Only a loss that scores the two sides apart (``kto``)
reads such pairs meaningfully: a contrastive loss (``dpo``) would compare answers to different prompts.
"""

from __future__ import annotations

from dpo3d.data.formats import is_unpaired
from dpo3d.data.records import RecordError


def unpaired_as_pairs(records: list[dict], source: str) -> list[dict]:
    """Desirable/undesirable examples (checked by ``formats.as_unpaired``, with ids) as pairs, in file order."""
    if not all(is_unpaired(record) for record in records):
        raise RecordError(source, None, "the source mixes preference pairs and unpaired {prompt, completion, label} examples")
    desirable = [record for record in records if record["label"]]
    undesirable = [record for record in records if not record["label"]]
    if not desirable or not undesirable:
        missing = "undesirable (label false)" if desirable else "desirable (label true)"
        raise RecordError(source, None, f"unpaired examples but no {missing} one: KTO's pairs need both kinds")
    pairs = []
    for k in range(max(len(desirable), len(undesirable))):
        good, bad = desirable[k % len(desirable)], undesirable[k % len(undesirable)]
        pairs.append({
            "id": f"{good['id']}+{bad['id']}",
            "prompt": good["prompt"],
            "chosen": good["completion"],
            "rejected_prompt": bad["prompt"],
            "rejected": bad["completion"],
            "unpaired": [good["id"], bad["id"]],
        })  # fmt: skip
    return pairs


def rejected_prompt(record: dict):
    """The prompt the rejected response answers: its own for unpaired examples, else the pair's."""
    return record.get("rejected_prompt", record["prompt"])
