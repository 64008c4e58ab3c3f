#!/usr/bin/env bash
# The GPU checks of issues 5 and 6, as one prepared script (run on a lent GPU machine; nothing to install
# beyond PyTorch, pandas, pyarrow, PyYAML): one full-size CREMA-D-shaped epoch (7,442 clips, 80% train,
# 257x188 spectrograms, 3 frames of 224 px, ResNet18 width 64, batch 64) of the real training loop for the
# baseline and for OGM-GE against the compute floor, with the split held on the GPU; epoch time and peak
# GPU memory; and the loader benchmark.  Usage: bash benchmarks/gpu_epoch.sh [OUT_DIR]
set -euo pipefail
out=${1:-.}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_epoch.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu_epoch.txt"
cd benchmarks
for method in baseline ogm_ge; do
  python3 training_input_overhead.py --width 64 --frame-size 224 --clips 7442 --batch 64 --method "$method" \
    --threads 16 | tee -a "$out/gpu_epoch.txt"
done
python3 training_input_overhead.py --width 64 --frame-size 224 --clips 7442 --batch 64 --method baseline \
  --in-memory false --workers 8 --threads 16 | tee -a "$out/gpu_epoch.txt"
# The loader against an OGM-GE-style per-item loader with 16 workers (random wav/JPEG files: no ffmpeg there).
python3 loader_vs_per_item.py --clips 512 --repeat 1 --workers 16 --random-files | tee -a "$out/gpu_epoch.txt"
