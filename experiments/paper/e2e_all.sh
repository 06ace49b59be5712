#!/usr/bin/env bash
# The whole E2E table in the order that answers the issue's goal first (FourierFT n = 500 against LoRA r = 4),
# at nice 19. Every command resumes from the JSONL records and saved trainer states, so rerunning this script
# after a kill continues where it stopped. Logs: logs/e2e_sweep.log, logs/e2e_runs.log.
# Each row's seed-0 table run follows its sweep at once: it decodes the adapter the sweep kept under runs/, which
# a fresh checkout does not have (it would train that point again).
#   nohup bash experiments/paper/e2e_all.sh > /dev/null 2>&1 &
set -u
cd "$(dirname "$0")/../.."
mkdir -p logs
e2e() { nice -n 19 .venv/bin/python experiments/paper/e2e.py "$@"; }
swept() { e2e --sweep --rows "$1" >> logs/e2e_sweep.log 2>&1 && e2e --rows "$1" --seeds 0 >> logs/e2e_runs.log 2>&1; }
e2e --rows zero-shot >> logs/e2e_runs.log 2>&1
swept fourierft-n500
swept lora-r4
e2e --rows fourierft-n500,lora-r4 --seeds 1,2 >> logs/e2e_runs.log 2>&1
# The only SmolLM2 weights here are the GGUF's Q4_1 blocks: the float base is those blocks dequantized, so a 4-bit
# run equals its float twin (both 4-bit rows did at seed 0, output for output); one seed per row shows it.
e2e --rows fourierft-n500-4bit,lora-r4-4bit --seeds 0 >> logs/e2e_runs.log 2>&1
swept fourierft-n1000
e2e --rows fourierft-n1000 --seeds 1,2 >> logs/e2e_runs.log 2>&1
swept lora-r8
e2e --rows lora-r8 --seeds 1,2 >> logs/e2e_runs.log 2>&1
swept vera
e2e --rows vera --seeds 1,2 >> logs/e2e_runs.log 2>&1
.venv/bin/python experiments/paper/e2e_table.py > /dev/null
