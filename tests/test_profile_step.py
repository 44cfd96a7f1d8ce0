"""benchmarks/profile_step.py's op classes: each aten op a DPO step runs lands in the class it belongs to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def profile_step(monkeypatch_module):
    monkeypatch_module.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["profile_step"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize(("op", "expected"), [
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::linear", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
    ("aten::_softmax", "attention"), ("aten::_softmax_backward_data", "attention"),
    # the LM head's log-softmax is not attention's softmax
    ("aten::_log_softmax", "head + loss"), ("aten::_log_softmax_backward_data", "head + loss"),
    ("aten::gather", "head + loss"), ("aten::logsumexp", "head + loss"),
    ("aten::_fused_adamw_", "optimizer"), ("aten::_foreach_mul_", "optimizer"),
    ("aten::linalg_vector_norm", "optimizer"),  # gradient clipping's norm; RMSNorm computes pow/mean/rsqrt
    ("aten::pow", "norm"), ("aten::rsqrt", "norm"), ("aten::mean", "norm"),
    ("aten::copy_", "memory"), ("aten::empty", "memory"), ("aten::zero_", "memory"), ("aten::index_select", "memory"),
    ("aten::embedding_dense_backward", "memory"), ("aten::transpose", "memory"), ("aten::t", "memory"),
    ("aten::mul", "element-wise"), ("aten::add_", "element-wise"), ("aten::silu_backward", "element-wise"),
    ("aten::neg", "element-wise"), ("aten::cat", "element-wise"),
    ("aten::bernoulli_", "other"),
])
def test_each_op_lands_in_its_class(profile_step, op, expected):
    assert profile_step.op_class(op) == expected
