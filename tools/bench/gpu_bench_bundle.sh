#!/usr/bin/env bash
# Packs rwkv-bench-engine for the GPU device machine and runs it there.
#
# Why: the GPU machine has the CUDA toolkit (cudart, cuBLAS) but none of our
# build dependencies (abseil, OpenBLAS) and no network, so the benchmark is
# built here (-DCMAKE_CUDA_ARCHITECTURES=90) and travels with every shared
# library ldd lists that the GPU machine lacks (glibc, libstdc++, libgcc and
# the CUDA libraries are not packed), as one xz archive, the same recipe as
# kernels/gpu_test_bundle.sh.
#
#   tools/bench/gpu_bench_bundle.sh pack [build-dir]   # here; writes .carry/bench/ (git-ignored)
#   tools/bench/gpu_bench_bundle.sh run [MODEL...]     # on the GPU machine, repo root; logs to $OUT
#
# `run` benchmarks each MODEL (default: synthetic:1.5b synthetic:v4-1.5b
# synthetic:7.2b) at batches ${BATCHES:-1,8,64,256,960}, writing MODEL.txt
# and MODEL.json under $OUT, each model under its own time limit; with
# PREFILL=512,4096,16384 it times prompts of those lengths instead.
set -euo pipefail

bundle=.carry/bench

pack() {
  local build=${1:-build-bench}
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib"
  cp "$build/bin/rwkv-bench-engine" "$bundle/bin/"
  ldd "$bundle"/bin/* | awk '/=> \// {print $3}' | sort -u |
    grep -v -E '/usr/local/cuda|/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt)\.so|ld-linux' |
    while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
  tar -C "$bundle/lib" -cJf "$bundle/lib.tar.xz" .
  rm -rf "$bundle/lib"
  du -sh "$bundle"
}

run() {
  local out=${OUT:-/tmp/bench_out}
  mkdir -p "$out" /tmp/rwkv_bench_lib
  tar -C /tmp/rwkv_bench_lib -xJf "$bundle/lib.tar.xz"
  export LD_LIBRARY_PATH=/tmp/rwkv_bench_lib:/usr/local/cuda/lib64
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader || true
  if ldd "$bundle/bin/rwkv-bench-engine" | grep 'not found'; then echo "missing libraries"; fi
  local models=("$@")
  [[ ${#models[@]} -gt 0 ]] || models=(synthetic:1.5b synthetic:v4-1.5b synthetic:7.2b)
  local rc=0
  for m in "${models[@]}"; do
    local name=${m#synthetic:}
    local limit=150
    [[ "$name" == *7.2b* ]] && limit=${LIMIT_7B:-240}
    echo "== $m (limit ${limit}s) $(date -u +%FT%TZ)"
    # PREFILL=512,4096,16384 times prompts instead (decode too if BATCHES is set).
    local mode=(--batch "${BATCHES:-1,8,64,256,960}")
    if [[ -n "${PREFILL:-}" ]]; then
      mode=(--prefill "$PREFILL" --ffn-tokens 0)
      [[ -n "${BATCHES:-}" ]] && mode+=(--batch "$BATCHES")
    fi
    timeout "$limit" "$bundle/bin/rwkv-bench-engine" --model "$m" "${mode[@]}" \
      --steps "${STEPS:-20}" --warmup "${WARMUP:-3}" --peer albatross --json "$out/$name.json" 2>&1 |
      tee "$out/$name.txt" || rc=1
  done
  echo "gpu_bench_bundle: rc=$rc $(date -u +%FT%TZ)"
  return $rc
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack [build-dir] | run [MODEL...]" >&2; exit 2 ;;
esac
