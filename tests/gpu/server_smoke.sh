#!/usr/bin/env bash
# On a GPU machine: rwkv-server with --backend cuda streams the same greedy text
# as with --backend cpu (tiny rwkv.cpp model, 64 tokens, fp32 and fp16 weights),
# and the session/save/load path works on the GPU state pool.
# usage: server_smoke.sh BIN_DIR TESTDATA_DIR
set -u
BIN=$1
DATA=$2
TMP=$(mktemp -d)
pass=0
fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
MODEL="$DATA/rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin"

start() {  # start BACKEND DTYPE LOG -> sets PID, ADDR
  "$BIN/rwkv-server" --model "$MODEL" --byte-vocab --backend "$1" --weight-dtype "$2" --listen 127.0.0.1:0 \
    --metrics-listen off --state-dir "$TMP/states" --state-slots 8 >"$3" 2>&1 &
  PID=$!
  ADDR=""
  for _ in $(seq 1 200); do
    ADDR=$(sed -n 's/^rwkv-server: listening on //p' "$3")
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
}
stop() { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }

for cfg in "cpu f32" "cuda f32" "cuda f16" "cuda bf16"; do
  set -- $cfg
  start "$1" "$2" "$TMP/$1-$2.log"
  if [ -z "$ADDR" ]; then
    bad "$1/$2 server start"; cat "$TMP/$1-$2.log"; continue
  fi
  grep -E "backend|weights" "$TMP/$1-$2.log" | sed 's/^/  /'
  "$BIN/rwkv-client" --server "$ADDR" generate --prompt "The quick brown fox" --max-tokens 64 --temperature 0 \
    >"$TMP/$1-$2.txt" 2>/dev/null || bad "$1/$2 generate"
  ID=$("$BIN/rwkv-client" --server "$ADDR" session create --prompt "Once upon a time" | head -n1)
  "$BIN/rwkv-client" --server "$ADDR" session save "$ID" "s-$1-$2" >/dev/null || bad "$1/$2 save"
  "$BIN/rwkv-client" --server "$ADDR" generate --session "$ID" --max-tokens 32 --temperature 0 >"$TMP/$1-$2.cont" 2>/dev/null
  NEW=$("$BIN/rwkv-client" --server "$ADDR" session load "s-$1-$2" | head -n1)
  "$BIN/rwkv-client" --server "$ADDR" generate --session "$NEW" --max-tokens 32 --temperature 0 >"$TMP/$1-$2.load" 2>/dev/null
  cmp -s "$TMP/$1-$2.cont" "$TMP/$1-$2.load" && ok "$1/$2 saved session continues like the original" \
    || bad "$1/$2 save/load continuation"
  stop
  echo "  $1/$2: $(head -c 80 "$TMP/$1-$2.txt" | tr '\n' ' ')"
done
for cfg in cuda-f32 cuda-f16 cuda-bf16; do
  cmp -s "$TMP/cpu-f32.txt" "$TMP/$cfg.txt" && ok "greedy text $cfg == cpu" || bad "greedy text $cfg != cpu"
done
# A state saved by the CPU server loads on the GPU server and continues the same way.
start cuda f32 "$TMP/x.log"
NEW=$("$BIN/rwkv-client" --server "$ADDR" session load s-cpu-f32 | head -n1)
"$BIN/rwkv-client" --server "$ADDR" generate --session "$NEW" --max-tokens 32 --temperature 0 >"$TMP/x.load" 2>/dev/null
stop
cmp -s "$TMP/cpu-f32.cont" "$TMP/x.load" && ok "CPU-saved state continues identically on the GPU" \
  || bad "CPU-saved state on the GPU"
rm -rf "$TMP"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
