#!/usr/bin/env bash
# On a machine with two GPUs: GPT-2 shards from the Python standard library's sources, lm-gpt2 for
# 300 steps on them (GPU 0) and lm-markov at its default settings (GPU 1), side by side.
# Records go to $OUT (default ./lm-data-gpu). TIKTOKEN_CACHE_DIR must hold r50k_base.tiktoken
# on a machine that cannot download it.
set -euo pipefail
OUT=${OUT:-lm-data-gpu}
mkdir -p "$OUT"
STDLIB=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
SHARDS=${SHARDS:-/tmp/stdlib-shards}
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
/usr/bin/time -f "shards: %e s" python3 -m bench_cli data shards "$STDLIB" --out "$SHARDS" \
    --glob '*.py' --tokenizer gpt2 --val-fraction 0.02 --skip-undecodable --quiet
CUDA_VISIBLE_DEVICES=0 python3 -m bench_cli run --task lm-gpt2 --opt adamw --data "$SHARDS" --steps 300 \
    --set run.warmup_steps=30 --set run.eval_interval=50 --out "$OUT/gpt2" --quiet \
    > "$OUT/gpt2.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 -m bench_cli run --task lm-markov --opt adamw --out "$OUT/markov" --quiet \
    --set run.max_seconds=${MARKOV_SECONDS:-3600} \
    > "$OUT/markov.log" 2>&1 &
wait
cat "$OUT/gpt2.log" "$OUT/markov.log"
