# Shell helpers for the e2e script tests: start rwkv-server on 127.0.0.1
# port 0, read its addresses from its log, stop it, and never leave it behind.
# Sourced; the caller sets SERVER_BIN and TMP and installs `trap cleanup EXIT`.

SERVER_PID=""
SERVER_ADDR=""
METRICS_ADDR=""

# True while process $1 exists and is not a zombie.
alive() {
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]
}

# start_server NAME ARGS...: starts "$SERVER_BIN --listen 127.0.0.1:0
# --metrics-listen 127.0.0.1:0 ARGS..." with its log in $TMP/NAME.log and waits
# (at most 60 s) for its address lines. Sets SERVER_PID, SERVER_ADDR, METRICS_ADDR.
start_server() {
  local name=$1
  shift
  local log="$TMP/$name.log"
  "$SERVER_BIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "$@" >"$log" 2>&1 </dev/null &
  SERVER_PID=$!
  SERVER_ADDR=""
  METRICS_ADDR=""
  local i
  for i in $(seq 1 600); do
    SERVER_ADDR=$(sed -n 's/^rwkv-server: listening on \([^ ]*\).*$/\1/p' "$log" | head -n1)
    METRICS_ADDR=$(sed -n 's/^rwkv-server: metrics on \([^ ]*\).*$/\1/p' "$log" | head -n1)
    if [ -n "$SERVER_ADDR" ] && [ -n "$METRICS_ADDR" ]; then
      return 0
    fi
    if ! alive "$SERVER_PID"; then
      echo "rwkv-server exited during start-up; log:"
      cat "$log"
      wait "$SERVER_PID" 2>/dev/null
      SERVER_PID=""
      return 1
    fi
    sleep 0.1
  done
  echo "rwkv-server did not start within 60 s; log:"
  cat "$log"
  return 1
}

# stop_server [SIGNAL]: sends SIGNAL (default TERM), waits up to 20 s, then
# SIGKILL. Returns the server's exit status (128+N when a signal N ended it).
stop_server() {
  local sig=${1:-TERM}
  [ -n "$SERVER_PID" ] || return 0
  kill "-$sig" "$SERVER_PID" 2>/dev/null
  local i
  for i in $(seq 1 200); do
    alive "$SERVER_PID" || break
    sleep 0.1
  done
  alive "$SERVER_PID" && echo "rwkv-server still running 20 s after SIG$sig; killing it"
  kill -KILL "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  local rc=$?
  SERVER_PID=""
  return $rc
}

cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}

pass=0
fail=0
ok() {
  echo "ok: $1"
  pass=$((pass + 1))
}
bad() {
  echo "FAIL: $1"
  fail=$((fail + 1))
}
# check DESCRIPTION COMMAND...: ok if COMMAND succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
