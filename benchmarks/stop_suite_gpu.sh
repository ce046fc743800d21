#!/bin/bash
# How a GPU suite stops: SIGTERM, then SIGKILL, to the coordinator of a suite with two runs
# sharing GPU 0 (under MPS), 15 s after both have started; then what is left on the machine
# (GPU processes, workers, the MPS daemons, claims). Figures in PERFORMANCE.md.
#   bash benchmarks/stop_suite_gpu.sh
export PYTHONUNBUFFERED=1
for SIG in TERM KILL; do
  OUT=$(mktemp -d)
  python3 -m bench_cli suite run suites/ademamix-claims.yaml --only markov --out $OUT --gpus 0 --runs-per-gpu 2 -q > $OUT.log 2>&1 &
  PID=$!
  for i in $(seq 1 600); do [ $(ls $OUT/.running 2>/dev/null | wc -l) -ge 2 ] && break; sleep 0.1; done
  sleep 15
  echo "== $SIG: claims $(ls $OUT/.running | wc -l); GPU processes: $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l); MPS processes: $(pgrep -fc nvidia-cuda-mps)"
  T1=$(date +%s.%N); kill -$SIG $PID; wait $PID; RC=$?
  echo "rc=$RC, exited $(python3 -c "print(round($(date +%s.%N)-$T1,2))") s after the signal"
  sleep 3
  echo "3 s later: GPU processes: $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l); workers: $(pgrep -fc spawn_main); MPS processes: $(pgrep -fc nvidia-cuda-mps); claims: $(ls $OUT/.running | wc -l); records: $(ls $OUT/lm-markov*.json 2>/dev/null | wc -l)"
  tail -1 $OUT.log
  for d in /tmp/bench-mps-*; do  # the daemon a killed coordinator left behind
    [ -d "$d/pipe" ] && echo quit | CUDA_MPS_PIPE_DIRECTORY=$d/pipe nvidia-cuda-mps-control && rm -rf "$d"
  done
  sleep 1
done
