"""scripts/gpu_check.py: its CPU branch (one line, exit 0, nothing written), the checks it would run on a
CUDA host, and its reading of `dpo3d sample`'s own summary line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from .commands import dpo3d

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return load(ROOT / "scripts" / "gpu_check.py", "gpu_check")


def test_without_cuda_it_says_so_in_one_line_and_exits_0(gpu_check, monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("\n") == 1 and "no CUDA device here" in printed.out and printed.err == ""
    assert not out.exists()


def test_on_cuda_it_plans_the_bf16_bench_an_fsdp_launch_and_both_samplers(gpu_check, tmp_path, monkeypatch):
    checks = {name: (command, allowed) for name, command, allowed in gpu_check.plan(tmp_path, python="py")}
    assert list(checks) == ["train_dpo", "fsdp", "sample_hf", "sample_vllm"]
    assert sum(allowed for _, allowed in checks.values()) <= 8 * 60  # the budget on one H100
    bench = checks["train_dpo"][0]
    assert bench[1] == "benchmarks/bench_train_dpo.py" and bench[bench.index("--precision") + 1] == "bf16"
    # every configuration it asks the bench for exists there (a renamed one would fail the bench's argparse)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    configs = load(ROOT / "benchmarks" / "bench_train_dpo.py", "bench_train_dpo").CONFIGS
    asked = [bench[i + 1] for i, arg in enumerate(bench) if arg == "--only"]
    assert asked and set(asked) <= set(configs) and "trl-precompute-liger" in asked
    fsdp = checks["fsdp"][0]
    assert fsdp[fsdp.index("--config_file") + 1] == "configs/accelerate/fsdp.yaml"
    assert (ROOT / "configs/accelerate/fsdp.yaml").is_file() and fsdp[fsdp.index("--num_processes") + 1] == "1"
    hf, vllm = checks["sample_hf"][0], checks["sample_vllm"][0]
    # the same prompts and sampling for both backends: only --backend and the output differ
    assert [a for a in hf if a not in ("hf", str(tmp_path / "hf.jsonl"))] == \
        [a for a in vllm if a not in ("vllm", str(tmp_path / "vllm.jsonl"))]


def test_sample_rate_reads_the_summary_line_dpo3d_sample_prints(gpu_check, tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "q", "question": "What is 2 + 3?", "answer": "5"}) + "\n")
    done = dpo3d("sample", "--prompts", str(prompts), "--model", str(tiny_model_dir), "-n", "2",
                 "--max-new-tokens", "4", "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    rate = gpu_check.sample_rate(done.stderr)
    assert rate is not None and 2 <= rate["new_tokens"] <= 8 and rate["tokens_per_second"] > 0
    # by hand: 12,345 tokens in 6.7 s
    assert gpu_check.sample_rate("x\nsample: 12345 tokens in 6.7 s (1,843 tok/s)\n") == {
        "new_tokens": 12345, "seconds": 6.7, "tokens_per_second": 1843.0}
    # a run faster than 0.05 s prints "0.0 s": the printed rate still stands (no division by the rounded time)
    assert gpu_check.sample_rate("sample: 6 tokens in 0.0 s (338 tok/s)")["tokens_per_second"] == 338.0
    assert gpu_check.sample_rate("no summary") is None


def test_just_gpu_check_runs_the_script():
    justfile = (ROOT / "Justfile").read_text()
    recipe = justfile[justfile.index("\ngpu-check"):]
    assert '"{{bin}}/python" scripts/gpu_check.py' in recipe.split("\n\n")[0]  # the project's venv, like every recipe
