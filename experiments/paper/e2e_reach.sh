#!/usr/bin/env bash
# A probe past the E2E table's sweep reach (REACH = 2 in e2e.py): FourierFT n = 500's chosen point, rate 0.27 ×
# scaling 200, lies two rate values past its grid, so the optimum may lie beyond. This walks the same rule with a
# reach of 4 in experiments/results/e2e_reach/, seeded with the table sweep's own fourierft-n500 records; the table
# and its chosen points are untouched. Resumable like e2e_all.sh; log: logs/e2e_reach.log.
#   nohup bash experiments/paper/e2e_reach.sh > /dev/null 2>&1 &
set -eu
cd "$(dirname "$0")/../.."
mkdir -p logs experiments/results/e2e_reach
probe=experiments/results/e2e_reach/e2e_sweep.jsonl
[ -s "$probe" ] || { grep '"row": "fourierft-n500"' experiments/results/e2e_sweep.jsonl > "$probe.tmp" && mv "$probe.tmp" "$probe"; }
nice -n 19 .venv/bin/python experiments/paper/e2e.py --sweep --rows fourierft-n500 --reach 4 \
  --results experiments/results/e2e_reach --state-dir runs/e2e_reach_state >> logs/e2e_reach.log 2>&1
