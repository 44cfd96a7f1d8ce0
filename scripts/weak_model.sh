#!/usr/bin/env bash
# The study's off-policy model: the bundled policy after 12 SFT steps on 96 of GSM8K's reference solutions, a
# policy that answers in another task's style. Sampled at T 0.7 on the study's ASDiv prompts its answers sit
# 0.45-0.50 nats/token below the policy's own under the policy (scripts/offpolicy_gap.sh; the study's
# off-policy sources table), inside the paper's 0.4-1.3 (Table 1). ~3 min on two cores; does nothing when
# OUT/model.safetensors exists.
#   scripts/weak_model.sh [OUT] [SEED]
set -euo pipefail
OUT=${1:-runs/offpolicy-gap/sft-gsm8k}
SEED=${2:-0}
DPO3D=${DPO3D:-.venv/bin/dpo3d}
PY=${PY:-.venv/bin/python}
[ -f "$OUT/model.safetensors" ] && exit 0
mkdir -p "$(dirname "$OUT")"
DATA="$(dirname "$OUT")/gsm8k_sft.jsonl"
"$PY" - "$DATA" <<'PYEOF'
import json, sys
from dpo3d.data.datasets import load_prompts
rows = load_prompts("gsm8k:train", limit=96)
with open(sys.argv[1], "w") as out:
    for row in rows:
        out.write(json.dumps({"prompt": row["prompt"], "completion": row["reference"]}) + "\n")
PYEOF
"$DPO3D" sft --data "$DATA" --out "$OUT" --max-steps 12 --batch-size 8 --grad-accum 1 --lr 1e-4 --max-length 384 \
    --seed "$SEED"
