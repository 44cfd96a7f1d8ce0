"""One TRL DPOTrainer run with the 3D callback, for tests/test_trl_callback.py to start under `accelerate launch`
(2 processes, gloo on CPU): accelerate launch ... tests/trl_ddp_run.py OUT PAIRS MODEL PER_DEVICE_BATCH."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from dpo3d.integrations.trl import ThreeDCallback


def main(out: str, pairs: str, model: str, batch: int) -> None:
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model)
    args = DPOConfig(output_dir=out, max_steps=4, per_device_train_batch_size=batch, logging_steps=1, save_strategy="no",
                     report_to=[], learning_rate=5e-2, lr_scheduler_type="constant", use_cpu=True, disable_tqdm=True,
                     seed=0)
    policy = AutoModelForCausalLM.from_pretrained(model)
    trainer = DPOTrainer(model=policy, ref_model=AutoModelForCausalLM.from_pretrained(model), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    callback = ThreeDCallback(pairs, every=2, probe_size=4, greedy_tokens=8).attach(trainer)
    trainer.train()
    rank = trainer.args.process_index
    Path(out, f"records-rank{rank}.json").write_text(json.dumps(callback.records))
    # leave the process group before the interpreter exits: a gloo group torn down at exit can abort a rank
    # ("terminate called without an active exception") after its work is done, failing the launch
    trainer.accelerator.wait_for_everyone()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
