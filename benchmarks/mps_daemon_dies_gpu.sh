#!/bin/bash
# What a GPU suite does when its MPS daemon dies mid-command: 12 lm-medium cells of 300 steps on
# GPU 0 with --runs-per-gpu 4 (under MPS); 4 s after the first four cells start, the control
# daemon is killed (SIGKILL in one round, SIGTERM in the other). Then: the command's exit code,
# the records' statuses and errors, its warnings, the GPU processes 12 s after the kill (an MPS
# server again?), and what is left at the end. Figures in PERFORMANCE.md.
#   bash benchmarks/mps_daemon_dies_gpu.sh tinyshakespeare.txt
export PYTHONUNBUFFERED=1
DATA=$(realpath "$1")
for SIG in KILL TERM; do
  OUT=$(mktemp -d)
  cat > $OUT.yaml <<Y
name: mps-dies
seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
device: cuda
tasks:
  - name: lm-medium
    options: {data: $DATA}
    budget: {steps: 300, eval_interval: 150}
optimizers:
  - name: adamw
Y
  python3 -m bench_cli suite run $OUT.yaml --out $OUT --gpus 0 --runs-per-gpu 4 -q > $OUT.log 2>&1 &
  PID=$!
  for i in $(seq 1 600); do [ $(ls $OUT/.running 2>/dev/null | wc -l) -ge 4 ] && break; sleep 0.1; done
  sleep 4
  DAEMON=$(pgrep -f "nvidia-cuda-mps-control -f" | head -1)
  echo "== SIG$SIG to the MPS control daemon ($DAEMON); MPS processes before: $(pgrep -fc nvidia-cuda-mps)"
  kill -$SIG $DAEMON
  sleep 12
  echo "12 s later: MPS processes $(pgrep -fc nvidia-cuda-mps); GPU processes: $(nvidia-smi --query-compute-apps=process_name --format=csv,noheader | sort | uniq -c | tr '\n' ';')"
  wait $PID; echo "rc=$?"
  python3 - $OUT <<'P'
import collections, json, pathlib, sys
recs = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).glob("lm-medium*.json")]
print(len(recs), "records:", dict(collections.Counter(r["status"] for r in recs)))
for e in sorted({(r.get("error") or "").splitlines()[0][:160] for r in recs if r.get("error")}):
    print("  error:", e)
P
  grep -i "warning" $OUT.log | sort | uniq -c | head -5
  sleep 1
  echo "at the end: MPS processes $(pgrep -fc nvidia-cuda-mps); bench-mps folders $(ls -d /tmp/bench-mps-* 2>/dev/null | wc -l)"
done
