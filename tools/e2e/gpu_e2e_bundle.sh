#!/usr/bin/env bash
# End-to-end benchmark on the GPU device machine: rwkv-server with the CUDA
# backend, driven by rwkv-loadgen over gRPC on loopback, beside
# rwkv-bench-engine at the same batch sizes, plus the constant-cost-per-token
# run (inter-token latency at several context lengths).
#
# Why: the GPU machine has the CUDA toolkit but none of our build
# dependencies (gRPC, abseil, protobuf, OpenBLAS) and no network, so the three
# programs are built here (-DCMAKE_CUDA_ARCHITECTURES=90) and travel with every
# shared library ldd lists that it lacks, as one xz archive (the recipe of
# kernels/gpu_test_bundle.sh).
#
#   tools/e2e/gpu_e2e_bundle.sh pack [build-dir]   # here; writes .carry/e2e/ (git-ignored)
#   tools/e2e/gpu_e2e_bundle.sh run                # on the GPU machine, repo root; results in $OUT
#
# `run` knobs (environment): MODELS (default synthetic:1.5b), CONCURRENCY
# (1,16,64,256,1024), PROMPT (16), GEN (256 tokens per request), DURATION
# (seconds of load per point, 20), WARMUP (5), CONTEXTS (100,10000,100000),
# CONTEXT_GEN (128), SERVER_ARGS (extra rwkv-server flags), CONNECTIONS (the loadgen's gRPC
# connections, 8: as 8 clients), LOADGEN_ARGS (extra rwkv-loadgen flags), BENCH_STEPS (20);
# BENCH=0 skips the engine-only run, CONTEXTS=none the context sweep.
# Per model it writes, under $OUT/<size>/: server.log, loadgen-c<C>.json/.txt,
# metrics-c<C>-{before,after}.txt (the server's /metrics around each point:
# the summary turns rwkv_engine_seconds_total into engine-thread ms per step),
# bench.json/.txt, context.json/.txt and summary.txt (end-to-end / engine-only).
# tools/e2e/plot_e2e.sh turns them into the PNGs in docs/.
set -euo pipefail

bundle=.carry/e2e

pack() {
  local build=${1:-build-bench}
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib"
  cp "$build/bin/rwkv-server" "$build/bin/rwkv-loadgen" "$build/bin/rwkv-bench-engine" "$bundle/bin/"
  ldd "$bundle"/bin/* | awk '/=> \// {print $3}' | sort -u |
    grep -v -E '/usr/local/cuda|/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt)\.so|ld-linux' |
    while read -r lib; do cp -L "$lib" "$bundle/lib/"; done
  tar -C "$bundle/lib" -cJf "$bundle/lib.tar.xz" .
  rm -rf "$bundle/lib"
  du -sh "$bundle"
}

wait_for_listen() {  # LOG PID: waits for "listening on", fails if the server died
  local log=$1 pid=$2
  for _ in $(seq 1 900); do
    grep -q "listening on" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "server exited:"; tail -20 "$log"; return 1; }
    sleep 0.2
  done
  echo "server did not start in 180 s"; tail -20 "$log"; return 1
}

run() {
  local out=${OUT:-/tmp/e2e_out}
  mkdir -p "$out" /tmp/rwkv_e2e_lib
  tar -C /tmp/rwkv_e2e_lib -xJf "$bundle/lib.tar.xz"
  export LD_LIBRARY_PATH=/tmp/rwkv_e2e_lib:/usr/local/cuda/lib64
  local bin=$bundle/bin
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader || true
  if ldd "$bin"/* | grep 'not found'; then echo "missing libraries"; return 1; fi
  local conc=${CONCURRENCY:-1,16,64,256,1024}
  local maxc=${conc##*,}
  local rc=0
  for model in ${MODELS:-synthetic:1.5b}; do
    local name=${model#synthetic:}
    local dir=$out/$name
    mkdir -p "$dir"
    echo "== $model $(date -u +%FT%TZ)"
    # Engine only: the same batch sizes, one process, no gRPC.
    if [ "${BENCH:-1}" != 0 ]; then
      "$bin/rwkv-bench-engine" --model "$model" --batch "$conc" --steps "${BENCH_STEPS:-20}" --warmup 3 \
        --json "$dir/bench.json" >"$dir/bench.txt" 2>&1 || { echo "bench failed"; tail -5 "$dir/bench.txt"; rc=1; }
      grep -E '^ +[0-9]+ ' "$dir/bench.txt" || true
    fi
    local port=$((50100 + RANDOM % 1000))
    local mport=$((port + 1000))
    # Slots for every stream of the largest concurrency plus the context
    # sessions; a batch as wide as the largest concurrency.
    RWKV_CUDA_GRAPHS_STATS=1 "$bin/rwkv-server" --backend cuda --model "$model" --listen "127.0.0.1:$port" \
      --metrics-listen "127.0.0.1:$mport" \
      --state-slots $((maxc + 16)) --max-sessions $((maxc + 64)) --max-batch "$maxc" --max-queue $((4 * maxc)) \
      --step-tokens $((maxc + 1024)) --step-log "$dir/steps.txt" ${SERVER_ARGS:-} >"$dir/server.log" 2>&1 &
    local spid=$!
    if ! wait_for_listen "$dir/server.log" "$spid"; then rc=1; kill -9 "$spid" 2>/dev/null || true; continue; fi
    grep -E "backend|state pool|model |warm-up" "$dir/server.log" | head -6
    for c in ${conc//,/ }; do
      scrape "$mport" "$dir/metrics-c$c-before.txt"
      "$bin/rwkv-loadgen" --server "127.0.0.1:$port" --no-progress --mode closed --concurrency "$c" \
        --prompt-tokens "${PROMPT:-16}" --max-tokens "${GEN:-256}" --duration "${DURATION:-20}" \
        --warmup "${WARMUP:-5}" --temperature 1 --connections "${CONNECTIONS:-8}" ${LOADGEN_ARGS:-} \
        --json "$dir/loadgen-c$c.json" >"$dir/loadgen-c$c.txt" 2>&1 ||
        { echo "loadgen c=$c failed"; rc=1; }
      scrape "$mport" "$dir/metrics-c$c-after.txt"
      grep -E "^steady|^ITL|^TTFT|^errors" "$dir/loadgen-c$c.txt" | sed "s/^/c=$c /"
    done
    if [ "${CONTEXTS:-}" != none ]; then
      "$bin/rwkv-loadgen" --server "127.0.0.1:$port" --no-progress --mode context \
        --context-lengths "${CONTEXTS:-100,10000,100000}" --context-repeats 2 --max-tokens "${CONTEXT_GEN:-128}" \
        --temperature 1 --json "$dir/context.json" >"$dir/context.txt" 2>&1 || { echo "context run failed"; rc=1; }
      cat "$dir/context.txt"
    fi
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    grep -E "graphs captured" "$dir/server.log" || true
    summarize "$dir" "$conc" | tee "$dir/summary.txt"
  done
  echo "gpu_e2e_bundle: rc=$rc $(date -u +%FT%TZ)"
  return $rc
}

scrape() {  # PORT FILE: the server's /metrics text (empty file if it cannot be read)
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$1/metrics" >"$2" 2>/dev/null || : >"$2"
}

summarize() {  # DIR CONC: the ratio end-to-end (steady tokens/s) / engine-only (tokens/s at that batch)
  local dir=$1 conc=$2
  python3 - "$dir" "$conc" <<'PY'
import json, sys
d, conc = sys.argv[1], [int(c) for c in sys.argv[2].split(",")]
try:
    bench = {r["batch"]: r for r in json.load(open(f"{d}/bench.json"))["results"]}
except Exception as e:
    bench = {}
    print("no engine-only results:", e)
def counters(path):  # the rwkv_engine_seconds_total phases and the step count from a /metrics text
    out = {}
    try:
        for line in open(path):
            if line.startswith("rwkv_engine_seconds_total{phase="):
                out[line.split('"')[1]] = float(line.split()[-1])
            elif line.startswith("rwkv_step_duration_seconds_count"):
                out["steps"] = float(line.split()[-1])
    except OSError:
        pass
    return out
print(f"{'conc':>6} {'e2e tok/s':>10} {'engine tok/s':>12} {'ratio':>6} {'TTFT p50 ms':>11} {'ITL p50':>8} {'p90':>8} {'p99':>8} {'p99/p50':>7} {'ITLsw p50':>9} {'p99':>7} {'p99/p50':>7} errors")
phases = []
for c in conc:
    try:
        j = json.load(open(f"{d}/loadgen-c{c}.json"))
    except Exception as e:
        print(f"{c:>6} (no result: {e})"); continue
    e2e = j["throughput"]["steady_tokens_per_s"]
    eng = bench.get(c, {}).get("tokens_per_s", 0)
    itl = j["itl_s"]
    sw = j.get("itl_steady_s", {})  # the ITL samples inside the steady window
    ratio = e2e / eng if eng else float("nan")
    print(f"{c:>6} {e2e:>10.1f} {eng:>12.1f} {ratio:>6.3f} {j['ttft_s']['p50']*1e3:>11.2f} {itl['p50']*1e3:>8.2f} "
          f"{itl['p90']*1e3:>8.2f} {itl['p99']*1e3:>8.2f} {itl['p99']/itl['p50'] if itl['p50'] else float('nan'):>7.2f} "
          f"{sw.get('p50', 0)*1e3:>9.2f} {sw.get('p99', 0)*1e3:>7.2f} {sw['p99']/sw['p50'] if sw.get('p50') else float('nan'):>7.2f} "
          f"{j['requests']['errors_by_code']}")
    a, b = counters(f"{d}/metrics-c{c}-before.txt"), counters(f"{d}/metrics-c{c}-after.txt")
    steps = b.get("steps", 0) - a.get("steps", 0)
    if steps > 0:
        ms = {k: (b.get(k, 0) - a.get(k, 0)) / steps * 1e3 for k in ("schedule", "forward", "sample", "emit")}
        phases.append(f"{c:>6} {int(steps):>7} " + " ".join(f"{ms[k]:>8.3f}" for k in ms))
if phases:
    print("engine thread, ms per step (rwkv_engine_seconds_total / steps, whole point incl. warm-up):")
    print(f"{'conc':>6} {'steps':>7} {'schedule':>8} {'forward':>8} {'sample':>8} {'emit':>8}")
    print("\n".join(phases))
PY
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack [build-dir] | run" >&2; exit 2 ;;
esac
