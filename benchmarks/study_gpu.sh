#!/usr/bin/env bash
# GPU study of issue 16, as one prepared script for a lent GPU machine (nothing to install beyond PyTorch,
# pandas, pyarrow, PyYAML; about 5-7 minutes, time-boxed to 7 by --budget-s 420): a full-size
# CREMA-D-shaped synthetic feature set (7,442 clips, 257x188 float16 spectrograms, extract.cremad.num_frames
# frames of 224 px), then (a) one run alone per method: real loop vs compute floor, GFLOP/step, achieved
# TFLOP/s against the bf16 peak; (b) 1, 2, 4, 8 baseline runs packed on the GPU through the slot mechanism
# (avbias.train.gpu): aggregate epochs per hour; and the default study's GPU-hours projected from both. torch.compile
# (c) is not measured (see benchmarks/study_gpu.py). Results: OUT_DIR/study_gpu.txt, OUT_DIR/study_gpu.json and
# the packed runs' logs.   Usage: bash benchmarks/study_gpu.sh [OUT_DIR] [extra study_gpu.py args, e.g. --smoke]
set -euo pipefail
out=${1:-.}
shift || true
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU (nvidia-smi)"; } \
  | tee "$out/study_gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/study_gpu.txt"
"$py" benchmarks/study_gpu.py --out "$out" --budget-s 420 "$@" 2>&1 | tee -a "$out/study_gpu.txt"
