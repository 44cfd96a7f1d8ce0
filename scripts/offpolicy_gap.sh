#!/usr/bin/env bash
# How far below the policy's own samples an off-policy source sits, per token (the paper's Table 1: a weaker
# model's answers were 0.4-1.3 nats/token below the policy's). Candidates for the study's off-policy responses:
# the policy at temperature 1.0 and 1.2 (the study's stand-in), and the policy after a few SFT steps on GSM8K's
# reference solutions (another style of answer to another task), each sampled on the study's ASDiv prompts and
# scored under the starting policy. Writes OUT/gap.md (a table: mean per-token and summed log-prob of each
# source, its gap to the policy's own samples with a 95% bootstrap interval over prompts).
#   scripts/offpolicy_gap.sh [OUT] [PROMPTS] [N] [SEED]
set -euo pipefail
OUT=${1:-runs/offpolicy-gap}
PROMPTS=${2:-24}
N=${3:-3}
SEED=${4:-0}
DPO3D=${DPO3D:-.venv/bin/dpo3d}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
SAMPLE=(--prompts asdiv --limit "$PROMPTS" -n "$N" --max-new-tokens 200 --seed "$SEED" --batch-size 24)

# a policy that answers in another task's style: 12 SFT steps on GSM8K's reference solutions
DPO3D="$DPO3D" PY="$PY" scripts/weak_model.sh "$OUT/sft-gsm8k" "$SEED"

for source in own-t0.7 policy-t1.0 policy-t1.2 sft-gsm8k-t0.7; do
    [ -f "$OUT/$source.scored.jsonl" ] && continue
    case $source in
        own-t0.7) args=(--temperature 0.7) ;;
        policy-t1.0) args=(--temperature 1.0) ;;
        policy-t1.2) args=(--temperature 1.2) ;;
        sft-gsm8k-t0.7) args=(--temperature 0.7 --model "$OUT/sft-gsm8k") ;;
    esac
    "$DPO3D" sample "${SAMPLE[@]}" "${args[@]}" -o "$OUT/$source.jsonl"
    # scored under the starting policy (the bundled model): log pi(y|x), summed and per token
    "$DPO3D" logprobs "$OUT/$source.jsonl" --max-length 512 -o "$OUT/$source.scored.jsonl"
done

"$PY" - "$OUT" <<'EOF'
import json, random, statistics, sys
from collections import defaultdict
from pathlib import Path

out = Path(sys.argv[1])
def by_prompt(name):
    groups = defaultdict(list)
    for line in (out / f"{name}.scored.jsonl").read_text().splitlines():
        r = json.loads(line)
        groups[r["id"]].append((r["completion_logp_mean"], r["completion_logp"], r["completion_tokens"]))
    return groups
own = by_prompt("own-t0.7")
def mean(groups, k, ids):
    return statistics.fmean(v[k] for i in ids for v in groups[i])
rows = ["| source | per-token log-prob | summed | tokens | gap to own, per token (95% CI over prompts) |", "|---|---|---|---|---|"]
rng = random.Random(0)
for name in ("own-t0.7", "policy-t1.0", "policy-t1.2", "sft-gsm8k-t0.7"):
    g = by_prompt(name)
    ids = sorted(set(g) & set(own))
    gap = mean(own, 0, ids) - mean(g, 0, ids)
    boot = sorted(mean(own, 0, s) - mean(g, 0, s) for s in ([rng.choice(ids) for _ in ids] for _ in range(2000)))
    rows.append(f"| {name} | {mean(g, 0, ids):.2f} | {mean(g, 1, ids):.1f} | {mean(g, 2, ids):.0f} | "
                f"{gap:.2f} [{boot[50]:.2f}, {boot[1949]:.2f}] |")
text = "\n".join(rows) + "\n"
(out / "gap.md").write_text(text)
print(text)
EOF
