"""TRL's DPOTrainer with dpo3d's 3D watch: which of DPO's 3D-properties the run shows, while it trains.

    pip install -e ".[trl]"                        # or: just trl-example (sets up, builds the pairs, runs this)
    dpo3d edit-pairs gsm8k:train --limit 64 -o pairs.jsonl
    python examples/trl_dpo_3d.py --pairs pairs.jsonl --out runs/trl-3d
    dpo3d diagnose runs/trl-3d/3d --table t.md --figure live.png     # the live records read again
    dpo3d diagnose runs/trl-3d --pairs pairs.jsonl --probe-size 6 --greedy-tokens 96 --max-length 320 \
        --base "$(python -c 'from dpo3d.models.loading import resolve; print(resolve("smollm2-135m-instruct"))')"

The model is the bundled SmolLM2-135M-Instruct as a plain Hugging Face folder (any hub id or folder works:
``--model``). The pairs are minimal edits (chosen = the GSM8K solution, rejected = the same text with only
the final answer changed), the setting where DPO is known to push the chosen response down with the
rejected one (likelihood displacement). Everything below the ``ThreeDCallback`` line is plain TRL.
"""

from __future__ import annotations

import argparse
import time

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from dpo3d.integrations.trl import ThreeDCallback
from dpo3d.models.loading import BUNDLED, resolve


def as_conversation(pair: dict) -> dict:
    """A chat prompt's string responses as assistant messages (dpo3d reads either; TRL needs one format)."""
    if isinstance(pair["prompt"], list):
        for side in ("chosen", "rejected"):
            if isinstance(pair[side], str):
                pair[side] = [{"role": "assistant", "content": pair[side]}]
    return pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", required=True, help="preference pairs (JSONL, TRL's prompt/chosen/rejected)")
    parser.add_argument("--model", default=resolve(BUNDLED), help="hub id or folder (default: the bundled SmolLM2)")
    parser.add_argument("--out", default="runs/trl-3d")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--every", type=int, default=10, help="optimizer steps between probes")
    parser.add_argument("--guard", choices=["stop", "sft"], default=None)
    parser.add_argument("--probe-size", type=int, default=6)
    parser.add_argument("--greedy-tokens", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--bf16", action="store_true", help="train (and probe) under bf16 autocast, TRL's own default; "
                        "float32 without it: bf16 rounding of ~170-nat sums is ~1 nat, which hides smaller moves")
    parser.add_argument("--save-steps", type=int, default=10, help="checkpoints, for dpo3d diagnose --pairs afterwards")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    train = load_dataset("json", data_files=args.pairs, split="train").select_columns(["prompt", "chosen", "rejected"])
    train = train.map(as_conversation)  # TRL wants chat responses beside a chat prompt
    config = DPOConfig(output_dir=args.out, max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
                       per_device_train_batch_size=1, max_length=args.max_length, logging_steps=args.every,
                       save_steps=args.save_steps, save_only_model=True, report_to=["tensorboard"], use_cpu=True, seed=0,
                       bf16=args.bf16)
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)

    callback = ThreeDCallback(args.pairs, every=args.every, guard=args.guard, probe_size=args.probe_size,
                              greedy_tokens=args.greedy_tokens, max_length=args.max_length).attach(trainer)

    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    print(f"\n{len(callback.records)} probe passes, {callback.probe_seconds:.1f} s of {seconds:.1f} s "
          f"({callback.probe_seconds / max(len(callback.records), 1):.2f} s per pass; "
          f"{(seconds - callback.probe_seconds) / max(trainer.state.global_step, 1):.2f} s per training step)")
    for event in callback.watch.events or [{"message": "no 3D-property above the thresholds"}]:
        print(" ", event["message"])


if __name__ == "__main__":
    main()
