#!/usr/bin/env bash
# Runs client/python/example_client.py against a real rwkv-server and checks
# that it streams exactly what rwkv-client streams for the same session and
# seed. Skips (77) when the Python gRPC packages are missing.
# usage: python_client_test.sh SERVER_BIN CLIENT_BIN DEFAULT_TESTDATA PYTHON EXAMPLE PROTOC
set -u
SERVER_BIN=$1
CLIENT_BIN=$2
DATA=${RWKV_TESTDATA:-$3}
PYTHON=$4
EXAMPLE=$5
PROTOC=$6
MODEL="$DATA/rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin"
if [ ! -f "$MODEL" ]; then
  echo "SKIP: $MODEL not found (set RWKV_TESTDATA to the shared/testdata folder)"
  exit 77
fi
if ! "$PYTHON" -c "import grpc, google.protobuf" 2>/dev/null; then
  echo "SKIP: $PYTHON cannot import grpc and google.protobuf (apt-get install python3-grpcio python3-protobuf)"
  exit 77
fi
TMP=$(mktemp -d)
# shellcheck source=server_lib.sh
. "$(dirname "$0")/server_lib.sh"
trap cleanup EXIT

start_server server --model "$MODEL" --byte-vocab --threads 1 || exit 1

timeout 60 "$PYTHON" "$EXAMPLE" --server "$SERVER_ADDR" --prompt "Hello" --max-tokens 16 --seed 7 \
  --protoc "$PROTOC" >"$TMP/py.out" 2>"$TMP/py.err"
rc=$?
[ $rc -eq 0 ] && ok "example client runs" || bad "example client (rc $rc): $(cat "$TMP/py.err")"
PY_ID=$(sed -n 's/^session: \([0-9a-f]\{32\}\)$/\1/p' "$TMP/py.err")
[ -n "$PY_ID" ] && ok "it created a session" || bad "no session id in: $(cat "$TMP/py.err")"
grep -q "finish_reason: FINISH_REASON_LENGTH  prompt_tokens: 0  generated_tokens: 16" "$TMP/py.err" &&
  ok "finish reason and usage" || bad "finish reason and usage: $(cat "$TMP/py.err")"
grep -qx "tokens_seen: 21" "$TMP/py.err" && ok "the session saw the prompt and every token" ||
  bad "tokens_seen: $(cat "$TMP/py.err")"

# The same session and seed through rwkv-client stream the same text.
ID=$("$CLIENT_BIN" --server "$SERVER_ADDR" session create --prompt "Hello" | head -n1)
"$CLIENT_BIN" --server "$SERVER_ADDR" generate --session "$ID" --max-tokens 16 --seed 7 >"$TMP/cli.out" 2>/dev/null
[ -s "$TMP/py.out" ] && cmp -s "$TMP/py.out" "$TMP/cli.out" && ok "same text as rwkv-client" ||
  bad "text differs from rwkv-client: $(od -c "$TMP/py.out" | head -3) vs $(od -c "$TMP/cli.out" | head -3)"

# A server error is reported readably, with a non-zero exit.
timeout 60 "$PYTHON" "$EXAMPLE" --server "$SERVER_ADDR" --top-p 2 --protoc "$PROTOC" >/dev/null 2>"$TMP/err.err"
rc=$?
[ $rc -eq 1 ] && grep -q "^example_client: INVALID_ARGUMENT: " "$TMP/err.err" && ok "errors are readable" ||
  bad "error report (rc $rc): $(cat "$TMP/err.err")"

stop_server TERM
rc=$?
[ $rc -eq 0 ] && ok "clean server exit" || bad "server exit status $rc"
finish
