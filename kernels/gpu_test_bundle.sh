#!/usr/bin/env bash
# Packs the CUDA test binaries for a GPU machine that has the CUDA toolkit but
# none of our build dependencies, and runs them there.
#
# Why: the GPU machine has nvcc, cuBLAS and cudart under /usr/local/cuda, but
# no abseil, OpenBLAS or GoogleTest, and no network. So the tests are built
# here (-DCMAKE_CUDA_ARCHITECTURES=90) and travel with every shared library
# they need that the GPU machine lacks (per ldd; glibc, libstdc++ and the
# CUDA libraries are not packed), plus the few test-data files they read.
# OpenBLAS is 36 MB, so the libraries travel as one xz archive (~6 MB).
#
#   kernels/gpu_test_bundle.sh pack [build-dir]   # here; writes .carry/gpu/ (git-ignored)
#   kernels/gpu_test_bundle.sh run                # on the GPU machine, repo root; logs to $OUT
set -euo pipefail

bundle=.carry/gpu

pack() {
  local build=${1:-build-cuda}
  local data=${RWKV_TESTDATA:-../shared/testdata}
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/testdata/official_ref" "$bundle/testdata/rwkv_cpp/generated"
  cp "$build/tests/cuda_backend_test" "$build/tests/cuda_model_test" "$build/tests/cuda_sample_test" \
     "$build/tests/cuda_engine_test" "$build/tests/cuda_fp16_state_test" "$bundle/bin/"
  ldd "$bundle"/bin/* | awk '/=> \// {print $3}' | sort -u |
    grep -v -E '/usr/local/cuda|/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt)\.so|ld-linux' |
    while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
  tar -C "$bundle/lib" -cJf "$bundle/lib.tar.xz" .
  rm -rf "$bundle/lib"
  for f in rwkv7_small_A.pth rwkv4_small_A.pth rwkv7_small_A.logits.f32 rwkv4_small_A.logits.f32 \
           rwkv7_small_A.state.f32 rwkv4_small_A.state.f32; do
    cp "$data/official_ref/$f" "$bundle/testdata/official_ref/"
  done
  for f in tiny-rwkv-4v0-660K-FP32.bin tiny-rwkv-7v0-834K-FP32.bin tiny-rwkv-7v0-834K-FP16.bin \
           expected-logits-4v0-660K.bin expected-logits-7v0-834K.bin \
           generated/rwkvcpp-logits-per-token-4v0-660K.f32 generated/rwkvcpp-logits-per-token-7v0-834K.f32; do
    cp "$data/rwkv_cpp/$f" "$bundle/testdata/rwkv_cpp/$f"
  done
  du -sh "$bundle"
}

run() {
  local out=${OUT:-/tmp/gpu_test_out}
  mkdir -p "$out" /tmp/rwkv_lib
  tar -C /tmp/rwkv_lib -xJf "$bundle/lib.tar.xz"
  export LD_LIBRARY_PATH=/tmp/rwkv_lib:/usr/local/cuda/lib64
  export RWKV_TESTDATA=$PWD/$bundle/testdata
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  if ldd "$bundle"/bin/* | grep 'not found'; then echo "missing libraries"; fi
  local rc=0
  for t in cuda_backend_test cuda_model_test cuda_sample_test cuda_engine_test cuda_fp16_state_test; do
    "$bundle/bin/$t" >"$out/$t.log" 2>&1 || rc=1
    echo "== $t"
    grep -E '^\[  (PASSED|FAILED) |tests?, listed below|^device:' "$out/$t.log" || true
    grep -A5 -E ': Failure$' "$out/$t.log" | head -40 || true
  done
  # The runs above capture and replay passes as CUDA graphs (the default);
  # the whole model again with every pass run eagerly.
  RWKV_CUDA_GRAPHS=0 "$bundle/bin/cuda_model_test" >"$out/cuda_model_test_eager.log" 2>&1 || rc=1
  echo "== cuda_model_test (RWKV_CUDA_GRAPHS=0)"
  grep -E '^\[  (PASSED|FAILED) |tests?, listed below' "$out/cuda_model_test_eager.log" | head -8 || true
  "$bundle/bin/cuda_model_test" --gtest_also_run_disabled_tests --gtest_filter='*DecodeStepTime*' 2>&1 |
    grep -E 'timing|FAILED' || true
  # Largest error of each op check as a fraction of its tolerance (worst first).
  grep -h 'of tolerance' "$out/cuda_backend_test.log" | sed 's/.*(\(.*\) of tolerance)/\1 &/' |
    sort -g -r | head -6 || true
  grep -h 'maxerr' "$out/cuda_model_test.log" "$out/cuda_fp16_state_test.log" || true
  grep -h -E '\[ (sample|timing|engine) \]' "$out/cuda_sample_test.log" "$out/cuda_engine_test.log" || true
  if [[ "${SANITIZE:-1}" == 1 ]]; then
    local cs=/usr/local/cuda/bin/compute-sanitizer
    timeout 150 "$cs" --tool memcheck --error-exitcode 9 "$bundle/bin/cuda_backend_test" \
      --gtest_filter='-*AllocReports*:*LaunchErrors*' >"$out/memcheck.log" 2>&1 || rc=1
    grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/memcheck.log" || tail -3 "$out/memcheck.log"
    # Racecheck, our kernels' tests in two runs that each finish in time (one run of all of them did not finish
    # in 170 s on an H100, 2026-11-27). Not the cuBLAS-path tests (CudaReluSquareTest.CublasAgainstCpu, the
    # grouped products, CudaOpsTest.WideProductsLeaveTheSkinnyGemmAboveTheirRows): racecheck reports hazards
    # inside cuBLAS's nvjet kernels (input-major NN and the batched ptrBatch ones; not our code),
    # and a --kernel-name filter that leaves cuBLAS uninstrumented makes the sanitizer fail with a hardware
    # exception (compute-sanitizer 2025.3.1).
    timeout 150 "$cs" --tool racecheck --error-exitcode 9 "$bundle/bin/cuda_backend_test" \
      --gtest_filter='*V7PrepWkv7WithOutput*' >"$out/racecheck.log" 2>&1 || rc=1
    grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/racecheck.log" || tail -3 "$out/racecheck.log"
    timeout 120 "$cs" --tool racecheck --error-exitcode 9 "$bundle/bin/cuda_backend_test" \
      --gtest_filter='*LayerNorm*:*TokenShift*:*GemvRows*:*SkinnyGemmAgainstCpu*:*SparseKernelAgainstCpu*' >"$out/racecheck2.log" 2>&1 || rc=1
    grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/racecheck2.log" || tail -3 "$out/racecheck2.log"
    # kernels/lora_gemm.cu alone, its kernels only (--kernel-name): 73 + 62 s for the two tests (2026-11-28,
    # H100, session 20), so a run of its own.
    timeout 300 "$cs" --tool racecheck --error-exitcode 9 --kernel-name kns=lora_ "$bundle/bin/cuda_backend_test" \
      --gtest_filter='*LoraGemmRows*:*LoraActivatedHidden*:*V7Projections*' >"$out/racecheck_lora.log" 2>&1 || rc=1
    grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/racecheck_lora.log" || tail -3 "$out/racecheck_lora.log"
    timeout 90 "$cs" --tool memcheck --error-exitcode 9 "$bundle/bin/cuda_model_test" \
      --gtest_filter='*OfficialRef*:*Batch*tiny_f16' >"$out/memcheck_model.log" 2>&1 || rc=1
    grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/memcheck_model.log" || tail -3 "$out/memcheck_model.log"
    timeout 150 "$cs" --tool memcheck --error-exitcode 9 "$bundle/bin/cuda_sample_test" \
      --gtest_filter='*SmallOdd*:*EdgeRows*' >"$out/memcheck_sample.log" 2>&1 || rc=1
    grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/memcheck_sample.log" || tail -3 "$out/memcheck_sample.log"
    timeout 150 "$cs" --tool racecheck --error-exitcode 9 "$bundle/bin/cuda_sample_test" \
      --gtest_filter='*EdgeRows*' >"$out/racecheck_sample.log" 2>&1 || rc=1
    grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$out/racecheck_sample.log" || tail -3 "$out/racecheck_sample.log"
  fi
  echo "gpu_test_bundle: rc=$rc"
  return $rc
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) run ;;
  *) echo "usage: $0 pack [build-dir] | run" >&2; exit 2 ;;
esac
