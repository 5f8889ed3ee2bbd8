#!/usr/bin/env bash
# Reproduce the bundled default model, src/diffscreen/data/ke2018_default.safetensors.
# About 10 min of simulation and 40 min of training on a 2-core CPU.
# Then run scripts/report_default_model.py to regenerate docs/default_model.md.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORK:-work/default}
mkdir -p "$W"
diffscreen simulate "$W/train_rayonix.cxi" --preset rayonix -n 700 --seed 1001
diffscreen simulate "$W/train_cspad.cxi" --preset cspad -n 900 --seed 1002
diffscreen simulate "$W/train_rayonix_jet.cxi" --preset rayonix_jet -n 400 --seed 1003
diffscreen train "$W/train_rayonix.cxi" "$W/train_cspad.cxi" "$W/train_rayonix_jet.cxi" \
    --out "$W/ke2018_default.safetensors" --epochs 60 --batches-per-epoch 25 --batch-size 16 --lr-start 0.025 --lr-end 2.5e-5 --fractions 0.6 0.1 0.3 --seed 0 --workers 1
cp "$W/ke2018_default.safetensors" src/diffscreen/data/ke2018_default.safetensors
