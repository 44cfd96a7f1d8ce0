#!/usr/bin/env bash
# Offline DPO on scenario-2 pairs vs on-policy iterative DPO vs the same with TR-DPO's reference sync, on the
# bundled SmolLM2 and ASDiv, for one seed (docs/iterate.md has the write-up; run it for seeds 0 1 2, then
# scripts/onpolicy_report.py OUT). Defaults: 2 rounds x 16 prompts x 8 samples, 8 steps a round, 20 + 20 test
# problems: ~1.5 h a seed on one core of a 2-core host (three seeds side by side ~2 h). Every arm gets the same optimizer updates (ROUNDS x STEPS at batch 4) and the
# same number of generated samples (ROUNDS x PPR prompts x N) from the starting policy or its own rounds:
#   iterate   ROUNDS rounds: sample N per prompt from the current policy, math-verify, best vs worst, STEPS DPO steps
#   tr-dpo    the same, with the reference softly synced to the policy during training (alpha 0.6 every 4 steps)
#   offline   all ROUNDS x PPR prompts sampled once from the starting policy, scenario 2 pairs (the dataset's
#             solution chosen, the policy's worst answer rejected), ROUNDS x STEPS steps in one run
# All three arms track the same probe pairs (iterate's round-1 pairs) and share round 1's samples (the starting
# policy, the same seed). Every model is then tested greedily on TEST held-out ASDiv problems (in-domain, none of
# the training prompts) and TEST SVAMP problems (out-of-domain). Rerun to continue where it stopped.
#   scripts/onpolicy_compare.sh OUT SEED [ROUNDS] [PPR] [N] [STEPS] [TEST]
# Environment: MIXED=bf16 trains every arm under bf16 autocast (default no: float32); SYNC_EVERY is TR-DPO's
# sync period in steps (default STEPS/2, so the reference moves twice a round); SAMPLE_DTYPE is every arm's
# sampling dtype (default float32, as the documented runs sampled; auto is bfloat16 on a bf16 CPU or GPU).
set -euo pipefail
OUT=${1:?OUT folder}
SEED=${2:?seed}
ROUNDS=${3:-2}
PPR=${4:-16}
N=${5:-8}
STEPS=${6:-8}
TEST=${7:-20}
MIXED=${MIXED:-no}
SYNC_EVERY=${SYNC_EVERY:-$((STEPS > 1 ? STEPS / 2 : 1))}
SAMPLE_DTYPE=${SAMPLE_DTYPE:-float32}
DPO3D=${DPO3D:-.venv/bin/dpo3d}
PY=${PY:-.venv/bin/python}
LIMIT=$((ROUNDS * PPR))
RUN="$OUT/seed-$SEED"
mkdir -p "$RUN"

# a constant learning rate, no warm-up: iterate's defaults, given here so the offline run trains alike
TRAIN=(--batch-size 4 --lr 2e-5 --schedule constant --warmup-ratio 0 --log-every 2 --save-every "$STEPS"
       --probe-size 6 --unseen 12 --max-length 384 --seed "$SEED" --mixed-precision "$MIXED")
ITER=(--prompts asdiv --limit "$LIMIT" --prompts-per-round "$PPR" --rounds "$ROUNDS" -n "$N" --max-new-tokens 200
      --sample-dtype "$SAMPLE_DTYPE"
      --max-steps "$STEPS" "${TRAIN[@]}")

stamp() { echo "== $(date -u +%H:%M:%S) seed $SEED: $*" >&2; }

# the test sets, shared by every seed: ASDiv after the training prompts, and SVAMP
if [ ! -f "$OUT/test-asdiv.jsonl" ]; then
    "$PY" - "$OUT" "$LIMIT" "$TEST" <<'EOF'
import json, sys
from dpo3d.data.datasets import load_prompts
out, limit, test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for name, rows in (("asdiv", load_prompts("asdiv", limit=limit + test)[limit:]), ("svamp", load_prompts("svamp", limit=test))):
    with open(f"{out}/test-{name}.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
EOF
fi

stamp "iterate"
"$DPO3D" iterate --out "$RUN/iterate" "${ITER[@]}"

stamp "iterate + TR-DPO sync (round 1's samples shared)"
mkdir -p "$RUN/tr-dpo/round-1"
for file in round-1/samples.jsonl round-1/samples.jsonl.run.json round-1/judged.jsonl round-1/pairs.jsonl probe_pairs.jsonl; do
    [ -f "$RUN/tr-dpo/$file" ] || cp "$RUN/iterate/$file" "$RUN/tr-dpo/$file"
done
"$DPO3D" iterate --out "$RUN/tr-dpo" "${ITER[@]}" --ref-sync soft --ref-sync-alpha 0.6 --ref-sync-every "$SYNC_EVERY"

stamp "offline: the starting policy's samples on every prompt (round 1's reused), scenario 2 pairs"
OFF="$RUN/offline"
mkdir -p "$OFF"
if [ ! -f "$OFF/samples.jsonl" ]; then
    "$PY" - "$OFF/rest-prompts.jsonl" "$PPR" "$LIMIT" <<'EOF'
import json, sys
from dpo3d.data.datasets import load_prompts
path, first, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as handle:
    for row in load_prompts("asdiv", limit=limit)[first:]:
        handle.write(json.dumps(row) + "\n")
EOF
    # labelled "policy" like iterate's own samples, so build-pairs takes the rejected from both; in iterate's
    # sampling dtype, so both arms sample the starting policy alike
    "$DPO3D" sample --prompts "$OFF/rest-prompts.jsonl" -n "$N" --max-new-tokens 200 --temperature 0.7 \
        --dtype "$SAMPLE_DTYPE" --seed "$((SEED + 1))" --batch-size 32 --source policy -o "$OFF/rest-samples.jsonl" --resume
    cat "$RUN/iterate/round-1/samples.jsonl" "$OFF/rest-samples.jsonl" > "$OFF/samples.jsonl.part"
    mv "$OFF/samples.jsonl.part" "$OFF/samples.jsonl"
fi
[ -f "$OFF/judged.jsonl" ] || "$DPO3D" judge math "$OFF/samples.jsonl" -o "$OFF/judged.jsonl"
[ -f "$OFF/pairs.jsonl" ] || "$DPO3D" build-pairs "$OFF/judged.jsonl" --chosen-from reference \
    --rejected-from policy -o "$OFF/pairs.jsonl"
[ -f "$OFF/train/summary.json" ] || "$DPO3D" train-dpo --pairs "$OFF/pairs.jsonl" --probe-pairs "$RUN/iterate/probe_pairs.jsonl" \
    --max-steps "$((ROUNDS * STEPS))" "${TRAIN[@]}" --save-every "$((ROUNDS * STEPS))" --out "$OFF/train" --resume

stamp "test: greedy, in-domain ASDiv and out-of-domain SVAMP"
models=("$RUN/iterate/round-$ROUNDS/train" "$RUN/tr-dpo/round-$ROUNDS/train" "$OFF/train")
names=(iterate tr-dpo offline)
if [ "$SEED" = 0 ]; then  # the starting model (greedy: the same for every seed) with seed 0
    models+=(smollm2-135m-instruct); names+=(start)
fi
for i in "${!models[@]}"; do
    for set in asdiv svamp; do
        dest="$RUN/${names[$i]}.test-$set.jsonl"
        [ "${names[$i]}" = start ] && dest="$OUT/start.test-$set.jsonl"
        [ -f "$dest" ] && continue
        "$DPO3D" eval-math --model "${models[$i]}" --data "$OUT/test-$set.jsonl" --max-new-tokens 200 \
            --batch-size 30 --summary "${dest%.jsonl}.summary.json" -o "$dest"
    done
done
stamp "done"
