"""Fault injection on the state a run reads back: nothing corrupt is served silently.

Classes (issue 28): the encoding cache (a bad entry is dropped with one warning and recomputed; a failed
write only costs the cache), checkpoints (a damaged file is a CorruptFile naming it and the remedy; a
checkpoint of the previous version, without a manifest, still resumes), the reference log-prob cache
(a damaged file is recomputed with a warning), ``--model`` folders (damaged weights are a CorruptFile
naming the file; pickles are refused unless allowed) and run logs (a NaN, garbled or non-object line is
an error naming the file and line). Faults are injected by hand: bytes truncated, emptied or garbled,
writers monkeypatched to fail as a full disk does.
"""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file as save_numpy

from dpo3d.data import encoding_cache
from dpo3d.data.faults import CorruptFile, Fault
from dpo3d.data.records import RecordError
from dpo3d.data.run_log import read_log
from dpo3d.data.sequences import encode_pair
from dpo3d.training import checkpoint
from dpo3d.training import reference as ref_cache

from .test_train_dpo import Stop, run

# --------------------------------------------------------------------------- byte surgery


def tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Where tensor ``name``'s bytes lie in a safetensors file (8-byte header length, JSON header, data)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + size])[name]["data_offsets"]
    return 8 + size + start, 8 + size + end


def first_float_tensor(path: Path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        return next(name for name in handle.keys() if handle.get_slice(name).get_dtype() in ("F32", "F16", "BF16"))


def overwrite(path: Path, start: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[start : start + len(data)] = data
    path.write_bytes(bytes(raw))


def flip_low_bits(path: Path, start: int, count: int = 64) -> None:
    """Garble ``count`` bytes without making NaN or inf: the lowest bit of each (a float's mantissa)."""
    raw = bytearray(path.read_bytes())
    for index in range(start, start + count):
        raw[index] ^= 0x01
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garble_header(path: Path) -> None:
    overwrite(path, 12, b"\xff" * 24)  # inside the JSON header: not UTF-8


def garble_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) * 3 // 5
    for index in range(middle, middle + 256):
        raw[index] ^= 0x5A
    path.write_bytes(bytes(raw))


def nan_weights(path: Path) -> None:
    start, end = tensor_span(path, first_float_tensor(path))
    overwrite(path, start, b"\xff" * min(1024, end - start))  # 0xffffffff is a NaN in float32


def garble_weights(path: Path) -> None:
    start, _ = tensor_span(path, first_float_tensor(path))
    flip_low_bits(path, start)


@contextmanager
def recorded():
    """Every warning raised in the body (the list fills when the body ends)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def assert_warned(caught, *needles: str, count: int = 1) -> None:
    """Exactly ``count`` warnings whose text holds every needle (other libraries' warnings are ignored)."""
    ours = [str(w.message) for w in caught if all(needle in str(w.message) for needle in needles)]
    assert len(ours) == count, f"expected {count} warning(s) naming {needles}, got {[str(w.message) for w in caught]}"
    assert all("\n" not in text for text in ours), ours


# --------------------------------------------------------------------------- the encoding cache

ITEMS = [
    ([{"role": "user", "content": f"Question {i}: pick a colour."}], f"Blue, number {i}.") for i in range(4)
]
OTHER_ITEMS = [
    ([{"role": "user", "content": f"Another {i}: pick a number."}], f"Seven, number {i}.") for i in range(4)
]


def clean(tokenizer, items=ITEMS):
    return [encode_pair(tokenizer, prompt, response, 64) for prompt, response in items]


def entry(cache: Path) -> Path:
    (found,) = cache.glob("*.safetensors")
    return found


def rewrite_entry(path: Path, change) -> None:
    """Change an entry's arrays and write it back as a well-formed safetensors file (its metadata kept)."""
    with safe_open(str(path), framework="np") as handle:
        metadata = handle.metadata()
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    change(arrays)
    save_numpy(arrays, str(path), metadata=metadata)


def huge_id(arrays):
    arrays["response_ids"][0] = 10**9


def shifted_offsets(arrays):
    offsets = arrays["prompt_offsets"]
    offsets[1] += 1  # the first prompt takes a token of the second: same count, other examples


ENTRY_FAULTS = {
    "garbled ids": lambda path: flip_low_bits(path, tensor_span(path, "prompt_ids")[0], 16),
    "garbled ids (xor)": lambda path: overwrite(path, tensor_span(path, "response_ids")[0], b"\x5a" * 12),
    "an id beyond the vocabulary": lambda path: rewrite_entry(path, huge_id),
    "garbled offsets": lambda path: rewrite_entry(path, shifted_offsets),
    "truncated": truncate,
    "emptied": empty,
    "a header safetensors refuses": garble_header,
}


@pytest.mark.parametrize("fault", sorted(ENTRY_FAULTS))
def test_a_bad_cache_entry_is_dropped_with_one_warning_and_recomputed(tmp_path, tokenizer, counted, fault):
    cache = tmp_path / "cache"
    encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    ENTRY_FAULTS[fault](entry(cache))
    counted["n"] = 0
    with recorded() as caught:
        again, from_cache = encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    assert not from_cache and counted["n"] == len(ITEMS), "the damaged entry was served"
    assert again == clean(tokenizer)
    assert_warned(caught, entry(cache).name)
    # the entry was rewritten whole: the next run reads it back, silently
    counted["n"] = 0
    with recorded() as caught:
        third, from_cache = encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    assert from_cache and counted["n"] == 0 and third == clean(tokenizer)
    assert_warned(caught, entry(cache).name, count=0)


def test_an_entry_another_input_produced_is_not_served(tmp_path, tokenizer, counted):
    """Each entry carries the key of what produced it: one copied under another key's name is recomputed."""
    cache = tmp_path / "cache"
    encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    mine = entry(cache)
    other = cache / "other"
    encoding_cache.encode_cached(tokenizer, OTHER_ITEMS, 64, other)
    shutil.copyfile(entry(other), mine)  # same number of examples, other ids
    counted["n"] = 0
    with recorded() as caught:
        again, from_cache = encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    assert not from_cache and again == clean(tokenizer), "another input's entry was served"
    assert_warned(caught, mine.name)


def test_a_clean_entry_is_read_back_without_a_warning(tmp_path, tokenizer, counted):
    """The control: the checks do not reject what the cache wrote."""
    cache = tmp_path / "cache"
    encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    counted["n"] = 0
    with recorded() as caught:
        again, from_cache = encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    assert from_cache and counted["n"] == 0 and again == clean(tokenizer)
    assert_warned(caught, "cache", count=0)


def full_disk_safetensors(*args, **kwargs):
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")


def full_disk_os(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "cache")


@pytest.mark.parametrize("failure", [full_disk_safetensors, full_disk_os], ids=["SafetensorError", "ENOSPC"])
def test_a_cache_that_cannot_be_written_costs_only_the_cache(tmp_path, tokenizer, monkeypatch, failure):
    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save_file", failure)
    if hasattr(encoding_cache, "save_file"):
        monkeypatch.setattr(encoding_cache, "save_file", failure)
    cache = tmp_path / "cache"
    with recorded() as caught:
        encoded, from_cache = encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    assert encoded == clean(tokenizer) and not from_cache
    assert_warned(caught, "cache")
    leftovers = list(cache.iterdir()) if cache.exists() else []
    assert leftovers == [], "a temp file was left behind"


def test_a_cache_folder_that_is_a_file_costs_only_the_cache(tmp_path, tokenizer):
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder belongs")
    with recorded() as caught:
        encoded, from_cache = encoding_cache.encode_cached(tokenizer, ITEMS, 64, cache)
    assert encoded == clean(tokenizer) and not from_cache
    assert_warned(caught, str(cache))


# --------------------------------------------------------------------------- checkpoints


def trained_state(model) -> checkpoint.TrainerState:
    """A trainer state with real optimizer tensors (one AdamW step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.full_like(param, 1e-3)
    optimizer.step()
    optimizer.zero_grad()
    return checkpoint.TrainerState(7, optimizer.state_dict(), {"last_epoch": 7}, torch.random.get_rng_state())


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory, tokenizer):
    """A checkpoint with an extra model (as PPO's value model), saved once; each test damages a copy."""
    from dpo3d.models.tiny import tiny_causal_lm

    out = tmp_path_factory.mktemp("checkpoint-source")
    model = tiny_causal_lm(tokenizer, seed=1)
    checkpoint.save(out, model, tokenizer, trained_state(model), extra_models={"value": tiny_causal_lm(tokenizer, seed=2)})
    return out, {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.fixture
def run_out(tmp_path, saved_checkpoint):
    out = tmp_path / "run"
    shutil.copytree(saved_checkpoint[0], out)
    return out


def load_into_fresh(tokenizer, folder: Path):
    from dpo3d.models.tiny import tiny_causal_lm

    model = tiny_causal_lm(tokenizer, seed=3)
    state = checkpoint.load(folder, model, extra_models={"value": tiny_causal_lm(tokenizer, seed=4)})
    return model, state


FILE_FAULTS = {"truncated": truncate, "emptied": empty, "garbled": garble_middle, "a garbled header": garble_header,
               "garbled weights (finite)": garble_weights, "NaN weights": nan_weights}
CHECKPOINT_CASES = [
    ("model.safetensors", "truncated"), ("model.safetensors", "emptied"), ("model.safetensors", "a garbled header"),
    ("model.safetensors", "garbled weights (finite)"), ("model.safetensors", "NaN weights"),
    ("trainer_state.pt", "truncated"), ("trainer_state.pt", "emptied"), ("trainer_state.pt", "garbled"),
    ("value/model.safetensors", "truncated"), ("value/model.safetensors", "garbled weights (finite)"),
]


def assert_names_file_and_remedy(err: CorruptFile, path: Path) -> None:
    text = str(err)
    assert "\n" not in text
    assert str(path) in text
    assert "--out" in text or "restore" in text, text  # the remedy


@pytest.mark.parametrize(("name", "fault"), CHECKPOINT_CASES, ids=[f"{n}: {f}" for n, f in CHECKPOINT_CASES])
def test_a_damaged_checkpoint_file_is_a_corrupt_file_naming_it(tmp_path, tokenizer, run_out, name, fault):
    damaged = run_out / checkpoint.LATEST / name
    FILE_FAULTS[fault](damaged)
    with pytest.raises(CorruptFile) as caught:
        load_into_fresh(tokenizer, run_out / checkpoint.LATEST)
    assert_names_file_and_remedy(caught.value, damaged)


def test_a_checkpoint_loads_back_whole(tokenizer, run_out, saved_checkpoint):
    """The control: a checkpoint as saved loads without complaint, the same weights and step."""
    model, state = load_into_fresh(tokenizer, run_out / checkpoint.LATEST)
    assert state.step == 7
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved_checkpoint[1][key]), key


def strip_manifest(folder: Path) -> None:
    """What the previous version saved: the same files, no checksum manifest."""
    for manifest in folder.glob("*checksum*.json"):
        manifest.unlink()


def test_a_checkpoint_without_a_manifest_still_resumes(tokenizer, run_out, saved_checkpoint):
    folder = run_out / checkpoint.LATEST
    strip_manifest(folder)
    model, state = load_into_fresh(tokenizer, folder)
    assert state.step == 7
    assert all(torch.equal(v, saved_checkpoint[1][k]) for k, v in model.state_dict().items())


LEGACY_CASES = [("model.safetensors", "truncated"), ("model.safetensors", "NaN weights"),
                ("trainer_state.pt", "truncated"), ("trainer_state.pt", "emptied")]


@pytest.mark.parametrize(("name", "fault"), LEGACY_CASES, ids=[f"{n}: {f}" for n, f in LEGACY_CASES])
def test_a_damaged_checkpoint_without_a_manifest_is_a_corrupt_file(tokenizer, run_out, name, fault):
    """Without a manifest, what the files themselves show (a short file, a header, NaN or inf) is still caught."""
    folder = run_out / checkpoint.LATEST
    strip_manifest(folder)
    FILE_FAULTS[fault](folder / name)
    with pytest.raises(CorruptFile) as caught:
        load_into_fresh(tokenizer, folder)
    assert_names_file_and_remedy(caught.value, folder / name)


def test_a_garbled_manifest_is_a_corrupt_file(tokenizer, run_out):
    folder = run_out / checkpoint.LATEST
    manifests = list(folder.glob("*checksum*.json"))
    assert manifests, "the checkpoint carries no checksum manifest"
    manifests[0].write_text('{"files": {"model.safetens')
    with pytest.raises(CorruptFile) as caught:
        load_into_fresh(tokenizer, folder)
    assert_names_file_and_remedy(caught.value, manifests[0])


def torch_writer_failure(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # torch.save, disk full


def safetensors_full_disk(self, folder, *args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("writer", ["weights", "trainer state"])
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_last(tokenizer, run_out, monkeypatch, writer):
    """A full disk while saving: safetensors and torch.save raise their own errors (not OSError); they reach
    the user as one line naming the checkpoint, the previous checkpoint untouched, no staging folder left."""
    from dpo3d.models.tiny import tiny_causal_lm

    before = {p.relative_to(run_out): p.read_bytes() for p in run_out.rglob("*") if p.is_file()}
    model = tiny_causal_lm(tokenizer, seed=5)
    if writer == "weights":
        monkeypatch.setattr(type(model), "save_pretrained", safetensors_full_disk)
    else:
        monkeypatch.setattr(torch, "save", torch_writer_failure)
    with pytest.raises((OSError, Fault)) as caught:
        checkpoint.save(run_out, model, tokenizer, checkpoint.TrainerState(9, {}, {}, torch.random.get_rng_state()))
    target = run_out / checkpoint.LATEST
    assert str(target) in str(caught.value) and "\n" not in str(caught.value)
    if writer == "weights":
        assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert {p.relative_to(run_out): p.read_bytes() for p in run_out.rglob("*") if p.is_file()} == before


def test_resume_from_garbled_weights_names_the_file_not_the_learning_rate(tmp_path, tiny_model_dir):
    """The reported case: garbled checkpoint weights ended in "loss became non-finite ... lower --lr"."""
    from dpo3d.training.run_folder import LoopCallbacks

    def crash(step):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, tiny_model_dir, steps=4, save_every=2, callbacks=LoopCallbacks(on_step=crash))
    damaged = tmp_path / "run" / checkpoint.LATEST / "model.safetensors"
    nan_weights(damaged)
    with pytest.raises(CorruptFile) as caught:
        run(tmp_path, tiny_model_dir, steps=4, save_every=2, resume=True)
    assert_names_file_and_remedy(caught.value, damaged)


# --------------------------------------------------------------------------- the reference log-prob cache

KEY = "fingerprint-of-the-reference-and-ids"


@pytest.fixture
def reference_out(tmp_path):
    tensors = {"chosen": torch.linspace(-40.0, -3.0, 16), "rejected": torch.linspace(-50.0, -4.0, 16)}
    ref_cache.store(tmp_path, KEY, tensors)
    return tmp_path, tensors


REFERENCE_FAULTS = {"truncated": truncate, "emptied": empty, "a garbled header": garble_header,
                    "garbled values (finite)": garble_weights, "NaN values": nan_weights}


@pytest.mark.parametrize("fault", sorted(REFERENCE_FAULTS))
def test_a_damaged_reference_cache_is_recomputed_with_a_warning(reference_out, fault):
    out, _ = reference_out
    path = out / ref_cache.CACHE_FILE
    REFERENCE_FAULTS[fault](path)
    with recorded() as caught:
        found = ref_cache.cached(out, KEY)
    assert found is None, "the damaged cache was served"  # None: the caller scores the reference again
    assert_warned(caught, str(path))


def test_a_reference_cache_reads_back_whole(reference_out):
    """The control: what store wrote comes back, silently; another fingerprint misses without a warning."""
    out, tensors = reference_out
    with recorded() as caught:
        found = ref_cache.cached(out, KEY)
        assert ref_cache.cached(out, "another input") is None
    assert_warned(caught, ref_cache.CACHE_FILE, count=0)
    assert found is not None and all(torch.equal(found[k], tensors[k]) for k in tensors)


def test_a_reference_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(ref_cache, "save_file", full_disk_safetensors)
    with recorded() as caught:
        ref_cache.store(tmp_path, KEY, {"chosen": torch.zeros(3)})
    assert_warned(caught, ref_cache.CACHE_FILE)
    assert list(tmp_path.iterdir()) == [], "a temp file was left behind"


def test_resume_with_a_garbled_reference_cache_recomputes_it(tmp_path, tiny_model_dir):
    from dpo3d.training.run_folder import LoopCallbacks

    whole = run(tmp_path, tiny_model_dir, steps=3, out_name="whole", save_every=2)

    def crash(step):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, tiny_model_dir, steps=3, out_name="broken", save_every=2, callbacks=LoopCallbacks(on_step=crash))
    path = tmp_path / "broken" / ref_cache.CACHE_FILE
    garble_weights(path)
    with recorded() as caught:
        resumed = run(tmp_path, tiny_model_dir, steps=3, out_name="broken", save_every=2, resume=True)
    drop = {"examples_per_s"}
    assert ([{k: v for k, v in r.items() if k not in drop} for r in read_log(resumed.out / "metrics.jsonl")]
            == [{k: v for k, v in r.items() if k not in drop} for r in read_log(whole.out / "metrics.jsonl")])
    assert_warned(caught, str(path))


# --------------------------------------------------------------------------- --model folders


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


MODEL_FAULTS = {"truncated": truncate, "emptied": empty, "a garbled header": garble_header, "NaN weights": nan_weights,
                "inf weights": lambda path: overwrite(path, tensor_span(path, first_float_tensor(path))[0],
                                                      b"\x00\x00\x80\x7f" * 64)}


@pytest.mark.parametrize("fault", sorted(MODEL_FAULTS))
def test_a_damaged_model_folder_is_a_corrupt_file_naming_it(model_copy, fault):
    from dpo3d.models.loading import load_causal_lm

    damaged = model_copy / "model.safetensors"
    MODEL_FAULTS[fault](damaged)
    with pytest.raises(CorruptFile) as caught:
        load_causal_lm(str(model_copy))
    assert str(damaged) in str(caught.value) and "\n" not in str(caught.value)


def test_a_damaged_shard_is_named(tmp_path, tokenizer):
    from dpo3d.models.loading import load_causal_lm
    from dpo3d.models.tiny import tiny_causal_lm

    folder = tmp_path / "sharded"
    tiny_causal_lm(tokenizer, seed=0).save_pretrained(folder, max_shard_size="2MB")
    tokenizer.save_pretrained(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    truncate(shards[-1])
    with pytest.raises(CorruptFile, match=shards[-1].name):
        load_causal_lm(str(folder))


def pickle_only(folder: Path) -> Path:
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()
    return folder


def test_pickle_weights_are_refused_naming_the_flag(model_copy):
    from dpo3d.models.loading import load_causal_lm

    with pytest.raises(Fault, match="--allow-pickle") as caught:
        load_causal_lm(str(pickle_only(model_copy)))
    assert "pytorch_model.bin" in str(caught.value) and "\n" not in str(caught.value)


def test_pickle_weights_load_when_allowed(model_copy, tiny_model_dir):
    from dpo3d.models.loading import LoadOptions, load_causal_lm

    model = load_causal_lm(str(pickle_only(model_copy)), LoadOptions(allow_pickle=True))
    reference = load_causal_lm(str(tiny_model_dir))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True))


def test_allow_pickle_is_a_declared_option():
    from dpo3d.config.fields import settings
    from dpo3d.models.loading import LoadOptions

    found = {s.name: s for s in settings(LoadOptions)}
    assert "allow_pickle" in found and found["allow_pickle"].default is False and found["allow_pickle"].help
    assert found["allow_pickle"].flags() == ("--allow-pickle/--no-allow-pickle",)  # the flag the refusal names


# --------------------------------------------------------------------------- run logs (metrics.jsonl)

GOOD = [json.dumps({"step": step, "loss": 0.69 - step / 100}) for step in range(4)]


def write_log(path: Path, lines: list[str], tail: str = "\n") -> Path:
    path.write_text("\n".join(lines) + tail)
    return path


BAD_LINES = {
    "NaN": '{"step": 2, "loss": NaN}',
    "Infinity": '{"step": 2, "loss": -Infinity}',
    "garbled bytes": '{"step": 2, "lo\x00\x01ss": 0.5',
    "a torn line": '{"step": 2, "lo',
    "not an object": "[2, 0.5]",
    "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("bad", sorted(BAD_LINES))
@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_bad_log_line_is_an_error_naming_file_and_line(tmp_path, bad, where):
    lines = [*GOOD[:2], BAD_LINES[bad], *GOOD[2:]] if where == "middle" else [*GOOD, BAD_LINES[bad]]
    path = write_log(tmp_path / "metrics.jsonl", lines)
    with pytest.raises(RecordError) as caught:
        read_log(path)
    number = 3 if where == "middle" else len(GOOD) + 1
    assert str(caught.value).startswith(f"{path}:{number}: ") and "\n" not in str(caught.value)


def test_a_torn_last_line_a_kill_left_is_dropped_with_a_warning(tmp_path):
    """A run killed mid-write leaves its last line torn, with no newline after it: that is no corruption
    (resume needs the lines before it), but it is said, with the file and line."""
    path = write_log(tmp_path / "metrics.jsonl", [*GOOD, '{"step": 4, "lo'], tail="")
    with recorded() as caught:
        assert read_log(path) == [json.loads(line) for line in GOOD]
    assert_warned(caught, f"{path}:{len(GOOD) + 1}")


def test_a_clean_log_reads_back_silently(tmp_path):
    path = write_log(tmp_path / "metrics.jsonl", GOOD)
    with recorded() as caught:
        assert read_log(path) == [json.loads(line) for line in GOOD]
    assert_warned(caught, str(path), count=0)
