"""PPO under data parallelism: 2 gloo processes whiten their advantages over the global batch, exactly as
one process holding both batches would (not each over its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpo3d.losses.ppo import masked_whiten

from .launching import port_args

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = Path(sys.executable).parent / "accelerate"

# each rank's rollouts differ in number, width, scale and offset, so per-process whitening would differ visibly
WORKER = """
import json, sys
from pathlib import Path

import torch
from accelerate import Accelerator

from dpo3d.training.ppo import whiten_advantages

accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
generator = torch.Generator().manual_seed(rank)
rows, width = 2 + rank, 3 + 2 * rank
advantages = torch.randn(rows, width, generator=generator) * (1 + 3 * rank) + 5 * rank
lengths = torch.randint(1, width + 1, (rows,), generator=generator)
mask = (torch.arange(width)[None, :] < lengths[:, None]).float()
whitened = whiten_advantages(accelerator, advantages, mask)
record = {"advantages": advantages.tolist(), "mask": mask.tolist(), "whitened": whitened.tolist()}
(Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(record))
# a clean gloo shutdown: exiting with its threads alive can abort a rank ("terminate called without an active exception")
accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
"""


def padded(rows: list[list[float]], width: int) -> torch.Tensor:
    return torch.tensor([row + [0.0] * (width - len(row)) for row in rows])


@pytest.mark.skipif(not LAUNCHER.exists(), reason="accelerate CLI")
def test_two_processes_whiten_advantages_over_the_global_batch(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    result = subprocess.run(
        [str(LAUNCHER), "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(tmp_path / "worker.py"), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    width = max(len(r["mask"][0]) for r in ranks)
    advantages = torch.cat([padded(r["advantages"], width) for r in ranks])
    mask = torch.cat([padded(r["mask"], width) for r in ranks])
    expected = masked_whiten(advantages, mask)  # one process holding the whole global batch
    got = torch.cat([padded(r["whitened"], width) for r in ranks])
    assert torch.allclose(got, expected, atol=1e-5)
    # the old behaviour, each process on its own, gives other numbers: the check above has teeth
    alone = masked_whiten(torch.tensor(ranks[0]["advantages"]), torch.tensor(ranks[0]["mask"]))
    assert not torch.allclose(alone, torch.tensor(ranks[0]["whitened"]), atol=1e-2)
