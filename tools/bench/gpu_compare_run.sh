#!/usr/bin/env bash
# One device call comparing the CUDA backend before and after a change: the
# CUDA tests (kernels/gpu_test_bundle.sh run, sanitizers off; it runs the
# model tests with graphs, the default, and eagerly), then rwkv-bench-engine
# per MODEL in several variants, each in its own process:
#   head        .carry/bench/bin/rwkv-bench-engine-head (a build of the baseline commit)
#   new         the current build, default options
#   eager       RWKV_CUDA_GRAPHS=0
#   invariant   RWKV_CUDA_BATCH_INVARIANT=1 (cuBLAS for every batch size)
# Setup here: kernels/gpu_test_bundle.sh pack build-cuda; tools/bench/gpu_bench_bundle.sh pack build-cuda;
# build the baseline in a worktree (git worktree add /tmp/head BASE; cmake + ninja rwkv-bench-engine there)
# and copy its binary to .carry/bench/bin/rwkv-bench-engine-head. On the device, from the repo root:
#   MODELS="synthetic:1.5b synthetic:7.2b" BUDGET=430 LIMIT=200 tools/bench/gpu_compare_run.sh
# A variant is skipped once BUDGET seconds have passed; logs and JSON end up in $OUT/devlog.tar.gz.
set -u
t0=$(date +%s)
LOG=/tmp/devlog; mkdir -p $LOG
MODELS=${MODELS:-synthetic:1.5b}
if [[ "${TESTS:-1}" == 1 ]]; then
  SANITIZE=0 OUT=$LOG/tests kernels/gpu_test_bundle.sh run 2>&1 | tee $LOG/tests.txt
fi
mkdir -p /tmp/rwkv_bench_lib; tar -C /tmp/rwkv_bench_lib -xJf .carry/bench/lib.tar.xz
export LD_LIBRARY_PATH=/tmp/rwkv_bench_lib:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
for m in $MODELS; do
  n=${m#synthetic:}
  for v in ${VARIANTS:-head new eager invariant}; do
    el=$(( $(date +%s) - t0 )); if (( el > ${BUDGET:-500} )); then echo "skip $m $v at ${el}s"; continue; fi
    bin=.carry/bench/bin/rwkv-bench-engine; [[ $v == head ]] && bin=$bin-head
    g=1; [[ $v == eager ]] && g=0
    inv=0; [[ $v == invariant ]] && inv=1
    echo "== $m $v (${el}s) $(date -u +%FT%TZ)"
    RWKV_CUDA_BATCH_INVARIANT=$inv RWKV_CUDA_GRAPHS=$g RWKV_CUDA_GRAPHS_STATS=1 timeout ${LIMIT:-200} $bin --model $m --batch ${BATCHES:-1,8,64,256,960} --steps 20 --warmup 3 \
      --peer albatross --json $LOG/$n.$v.json > $LOG/$n.$v.txt 2>&1; echo "rc=$?"
    grep -E "^backend|loaded|^ +[0-9]+ |failed|graphs captured" $LOG/$n.$v.txt
  done
done
tar -C $LOG -czf $OUT/devlog.tar.gz .
echo "total $(( $(date +%s) - t0 ))s"
