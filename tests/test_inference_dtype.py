"""`--dtype auto` (sample's default): bfloat16 where the device has bf16 units, float32 elsewhere,
and the dtype a run resolved to is the one it records and resumes with."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dpo3d.models import precision
from dpo3d_cli.app import app

CPU = torch.device("cpu")
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"


def test_cpuinfo_names_the_bf16_units():
    assert precision.cpuinfo_bf16_flags(ZEN4) == ["avx512_bf16"] and precision.cpuinfo_bf16_flags(SAPPHIRE) == ["amx_bf16"]
    assert precision.cpuinfo_bf16_flags(SKYLAKE) == []
    # a flag outside a flags line (a model name, say) is not a unit
    assert precision.cpuinfo_bf16_flags("model name\t: avx512_bf16 edition\nflags\t: fpu\n") == []


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [
    (True, False, "bfloat16"), (False, True, "bfloat16"), (False, False, "float32")])
def test_auto_is_bfloat16_only_with_bf16_units(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert precision.inference_dtype("auto", CPU) == expected
    assert precision.cpu_bf16_units() == [name for name, has in (("avx512_bf16", avx512_bf16), ("amx_bf16", amx)) if has]
    # a dtype the user names is kept, whatever the CPU has
    assert precision.inference_dtype("float32", CPU) == "float32"
    assert precision.inference_dtype("bfloat16", CPU) == "bfloat16"


def test_an_unknown_dtype_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="auto or one of float32, bfloat16, float16, got 'fp8'"):
        precision.inference_dtype("fp8", CPU)


def test_without_torchs_checks_cpuinfo_decides(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(precision, "Path", lambda _: tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text(SKYLAKE)
    assert precision.inference_dtype("auto", CPU) == "float32"
    (tmp_path / "cpuinfo").write_text(ZEN4)
    assert precision.inference_dtype("auto", CPU) == "bfloat16"


def test_a_cuda_device_without_bf16_gets_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.inference_dtype("auto", torch.device("cuda")) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.inference_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert precision.inference_dtype("auto", torch.device("mps")) == "float32"


def test_sample_records_the_dtype_auto_resolved_to_and_refuses_a_resume_that_resolves_otherwise(
        monkeypatch, tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(2)))
    out = tmp_path / "out.jsonl"
    args = ["sample", "--prompts", str(prompts), "--model", str(tiny_model_dir), "-n", "2", "--max-new-tokens", "3",
            "-b", "2", "--device", "cpu", "--out", str(out)]
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: True)
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    settings = json.loads((tmp_path / "out.jsonl.run.json").read_text())
    assert "bfloat16" in json.dumps(settings) and "auto" not in json.dumps(settings)
    # the same file continued on a CPU without bf16 units would mix the dtypes' samples: refused
    monkeypatch.setattr(precision, "has_bf16_units", lambda device: False)
    refused = CliRunner().invoke(app, [*args, "--resume"])
    assert refused.exit_code == 2 and "'bfloat16' -> 'float32'" in refused.output
