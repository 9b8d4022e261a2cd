#!/usr/bin/env bash
# End-to-end checks of rwkv-client against a real rwkv-server: a session's
# whole life (create, generate, save, restart the server, load, continue, the
# same tokens as without the restart), the other commands, and the exit codes
# (0 ok, 1 the server said no, 2 usage).
# usage: rwkv_client_cli_test.sh SERVER_BIN CLIENT_BIN DEFAULT_TESTDATA
set -u
SERVER_BIN=$1
CLIENT_BIN=$2
DATA=${RWKV_TESTDATA:-$3}
MODEL="$DATA/rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin"
if [ ! -f "$MODEL" ]; then
  echo "SKIP: $MODEL not found (set RWKV_TESTDATA to the shared/testdata folder)"
  exit 77
fi
TMP=$(mktemp -d)
# shellcheck source=server_lib.sh
. "$(dirname "$0")/server_lib.sh"
trap cleanup EXIT

client() { "$CLIENT_BIN" --server "$SERVER_ADDR" --deadline 30 "$@"; }
STATES="$TMP/states"
mkdir -p "$STATES"

start_server first --model "$MODEL" --byte-vocab --threads 1 --state-dir "$STATES" || exit 1

# ---- The README walk-through: create, generate, save, restart, load, continue.
ID=$(client session create --prompt "The quick brown fox" | head -n1)
[[ $ID =~ ^[0-9a-f]{32}$ ]] && ok "session create prints the id first" || bad "session create: id '$ID'"
client generate --session "$ID" --prompt " jumps" --max-tokens 24 --seed 1 >"$TMP/gen.txt" 2>"$TMP/gen.err"
rc=$?
[ $rc -eq 0 ] && [ -s "$TMP/gen.txt" ] && ok "generate" || bad "generate (rc $rc): $(cat "$TMP/gen.err")"
grep -q "finish_reason: length" "$TMP/gen.err" && grep -q "generated_tokens: 24" "$TMP/gen.err" &&
  ok "finish reason and usage on stderr" || bad "finish reason and usage: $(cat "$TMP/gen.err")"
client session save "$ID" fox >"$TMP/save.out"
[ "$(head -n1 "$TMP/save.out")" = "$ID" ] && grep -q "^saved: fox" "$TMP/save.out" && ok "session save" ||
  bad "session save: $(cat "$TMP/save.out")"
# The uninterrupted continuation, on a fork (a copy taken before the restart).
FORK=$(client session fork "$ID" | head -n1)
client generate --session "$FORK" --max-tokens 24 --seed 2 >"$TMP/uninterrupted.txt" 2>/dev/null

stop_server TERM
rc=$?
[ $rc -eq 0 ] && ok "SIGTERM: clean exit" || bad "SIGTERM: exit status $rc"
start_server second --model "$MODEL" --byte-vocab --threads 1 --state-dir "$STATES" || exit 1

NEW=$(client session load fox | head -n1)
[[ $NEW =~ ^[0-9a-f]{32}$ ]] && [ "$NEW" != "$ID" ] && ok "session load" || bad "session load: '$NEW'"
client generate --session "$NEW" --max-tokens 24 --seed 2 >"$TMP/continued.txt" 2>"$TMP/continued.err"
[ -s "$TMP/uninterrupted.txt" ] && cmp -s "$TMP/uninterrupted.txt" "$TMP/continued.txt" &&
  ok "a loaded session continues as if the server had never stopped" ||
  bad "loaded session continues differently: $(od -c "$TMP/uninterrupted.txt" | head -3) vs $(od -c "$TMP/continued.txt" | head -3)"
# SIGTERM saved the live session too: same id, same tokens seen, same continuation.
client session get "$ID" >"$TMP/get.out" 2>"$TMP/get.err"
[ "$(head -n1 "$TMP/get.out")" = "$ID" ] && grep -qx "tokens_seen: 49" "$TMP/get.out" &&
  ok "the live session survived the restart" || bad "session get after restart: $(cat "$TMP/get.out" "$TMP/get.err")"
client generate --session "$ID" --max-tokens 24 --seed 2 >"$TMP/continued2.txt" 2>/dev/null
cmp -s "$TMP/uninterrupted.txt" "$TMP/continued2.txt" && ok "the restored live session continues exactly" ||
  bad "restored live session continues differently"

# ---- The other commands.
[ "$(client tokenize "Hi")" = "72,105" ] && ok "tokenize" || bad "tokenize: '$(client tokenize "Hi")'"
[ "$(client detokenize 72,105)" = "Hi" ] && ok "detokenize" || bad "detokenize"
client info >"$TMP/info.out"
grep -qx "architecture: rwkv7" "$TMP/info.out" && grep -qx "vocab_size: 256" "$TMP/info.out" && ok "info" ||
  bad "info: $(cat "$TMP/info.out")"
client session list | grep -q "^$ID " && ok "session list" || bad "session list"
SNAP=$(client session load fox | head -n1)
client session export "$SNAP" "$TMP/fox.state" >"$TMP/export.out"
[ "$(head -n1 "$TMP/export.out")" = "$SNAP" ] && [ "$(head -c 8 "$TMP/fox.state")" = "RWKVSTAT" ] &&
  ok "session export writes a state file" || bad "session export: $(cat "$TMP/export.out")"
IMPORTED=$(client session import "$TMP/fox.state" | head -n1)
client session get "$IMPORTED" | grep -qx "tokens_seen: 49" && ok "session import" || bad "session import '$IMPORTED'"
client generate --session "$IMPORTED" --max-tokens 24 --seed 2 >"$TMP/imported.txt" 2>/dev/null
cmp -s "$TMP/uninterrupted.txt" "$TMP/imported.txt" && ok "an imported session continues exactly" ||
  bad "imported session continues differently"
client session create --from-saved fox | head -n1 | grep -Eq '^[0-9a-f]{32}$' && ok "session create --from-saved" ||
  bad "session create --from-saved"
client session delete "$IMPORTED" >"$TMP/delete.out"
[ "$(head -n1 "$TMP/delete.out")" = "$IMPORTED" ] && ok "session delete" || bad "session delete"
client generate --prompt "Hi" --max-tokens 3 --json >"$TMP/json.out" 2>"$TMP/json.err"
[ $? -eq 0 ] && [ "$(grep -c '^{.*}$' "$TMP/json.out")" -eq "$(wc -l <"$TMP/json.out")" ] &&
  grep -q '"finish_reason":"FINISH_REASON_LENGTH"' "$TMP/json.out" && ok "generate --json" ||
  bad "generate --json: $(cat "$TMP/json.out" "$TMP/json.err")"
client generate --prompt "Hi" --max-tokens 3 --logprobs 2 >/dev/null 2>"$TMP/lp.err"
[ "$(grep -c '^token [0-9]* logprob -\?[0-9.]* top: ' "$TMP/lp.err")" -eq 3 ] && ok "generate --logprobs" ||
  bad "generate --logprobs: $(cat "$TMP/lp.err")"
client generate --prompt "ab" --max-tokens 200 --stop-token 0 --stop "e" --temperature 0 >/dev/null 2>"$TMP/stop.err"
[ $? -eq 0 ] && ok "generate with stop conditions" || bad "generate with stop conditions: $(cat "$TMP/stop.err")"

# ---- Errors: readable, with the right exit status.
client session get "$IMPORTED" >"$TMP/o" 2>"$TMP/e"
rc=$?
[ $rc -eq 1 ] && grep -q "^rwkv-client: NOT_FOUND: " "$TMP/e" && ok "deleted session: NOT_FOUND, exit 1" ||
  bad "deleted session (rc $rc): $(cat "$TMP/e")"
client generate --prompt "x" --top-p 2 >"$TMP/o" 2>"$TMP/e"
rc=$?
[ $rc -eq 1 ] && grep -q "^rwkv-client: INVALID_ARGUMENT: .*top_p" "$TMP/e" && ok "top_p 2: INVALID_ARGUMENT, exit 1" ||
  bad "top_p 2 (rc $rc): $(cat "$TMP/e")"
"$CLIENT_BIN" --server "$SERVER_ADDR" --deadline 0.5 generate --prompt "x" --max-tokens 1000000 >/dev/null 2>"$TMP/e"
rc=$?
[ $rc -eq 1 ] && grep -q "DEADLINE_EXCEEDED" "$TMP/e" && ok "--deadline" || bad "--deadline (rc $rc): $(cat "$TMP/e")"
"$CLIENT_BIN" --server "$SERVER_ADDR" generate >"$TMP/o" 2>"$TMP/e"
[ $? -eq 2 ] && grep -q -- "--prompt" "$TMP/e" && ok "missing prompt: usage error, exit 2" || bad "missing prompt"
"$CLIENT_BIN" frobnicate >"$TMP/o" 2>"$TMP/e"
[ $? -eq 2 ] && ok "unknown command: exit 2" || bad "unknown command"
"$CLIENT_BIN" --help | grep -q "session export ID FILE" && ok "--help" || bad "--help"
"$CLIENT_BIN" --server 127.0.0.1:1 --deadline 5 info >"$TMP/o" 2>"$TMP/e"
rc=$?
[ $rc -eq 1 ] && grep -q "^rwkv-client: UNAVAILABLE" "$TMP/e" && ok "no server: UNAVAILABLE, exit 1" ||
  bad "no server (rc $rc): $(cat "$TMP/e")"

alive "$SERVER_PID" && ok "the server is still up" || bad "the server died; log: $(cat "$TMP/second.log")"
stop_server TERM
rc=$?
[ $rc -eq 0 ] && ok "second server: clean exit" || bad "second server: exit status $rc"
finish
