#!/usr/bin/env bash
# End-to-end checks of the rwkv-infer binary: tokenize, dump-logits against
# the official reference, deterministic generation, and clear errors.
# usage: rwkv_infer_cli_test.sh PATH/TO/rwkv-infer DEFAULT_TESTDATA
set -u
BIN="$1"
DATA="${RWKV_TESTDATA:-$2}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

# --tokenize with the byte vocabulary keeps NUL bytes from --prompt-file.
printf 'a\0b' >"$TMP/nul.txt"
out=$("$BIN" --tokenize --byte-vocab --prompt-file "$TMP/nul.txt")
[ "$out" = "97,0,98" ] && ok "byte tokenize with NUL" || bad "byte tokenize with NUL: got '$out'"

# Flag errors exit 2 and name the flag.
"$BIN" --model synthetic:tiny --max-tokens abc >"$TMP/o" 2>"$TMP/e"
rc=$?
[ $rc -eq 2 ] && grep -q -- "--max-tokens" "$TMP/e" && ok "bad flag value" || bad "bad flag value (rc $rc)"
"$BIN" --model synthetic:tiny --prompt x --tokens 1 >"$TMP/o" 2>"$TMP/e"
[ $? -eq 2 ] && ok "conflicting prompt sources" || bad "conflicting prompt sources"
"$BIN" --model /nonexistent.pth --tokens 1 >"$TMP/o" 2>"$TMP/e"
rc=$?
[ $rc -eq 1 ] && grep -q "nonexistent" "$TMP/e" && ok "missing model file" || bad "missing model file (rc $rc)"
"$BIN" --model synthetic:tiny --tokens 1 --top-p 2 >"$TMP/o" 2>"$TMP/e"
rc=$?
[ $rc -eq 1 ] && grep -q "top_p" "$TMP/e" && ok "invalid sampling parameter" || bad "invalid sampling parameter (rc $rc)"
"$BIN" --model synthetic:tiny --tokens 600 >"$TMP/o" 2>"$TMP/e"
[ $? -eq 1 ] && ok "out-of-range prompt token" || bad "out-of-range prompt token"

# Synthetic generation is deterministic for a seed and reports decode speed.
"$BIN" --model synthetic:tiny --tokens 1,2,3 --max-tokens 20 --seed 7 --temperature 1 >"$TMP/a" 2>"$TMP/e"
"$BIN" --model synthetic:tiny --tokens 1,2,3 --max-tokens 20 --seed 7 --temperature 1 >"$TMP/b" 2>/dev/null
cmp -s "$TMP/a" "$TMP/b" && [ -s "$TMP/a" ] && ok "seeded generation repeats" || bad "seeded generation repeats"
grep -q "tokens/s" "$TMP/e" && ok "decode speed reported" || bad "decode speed reported"

if [ -d "$DATA" ]; then
  # World tokenizer from the command line matches the reference ids.
  out=$("$BIN" --tokenize --vocab "$DATA/tokenizer/rwkv_vocab_v20230424.txt" --prompt "Hello world")
  [ "$out" = "33155,40213" ] && ok "world tokenize" || bad "world tokenize: got '$out'"

  # --dump-logits reproduces the official reference logits for every token.
  toks="0,1,2,3,511,510,255,256,100,100,100,7,42,300,450,12,34,56,78,90,123,234,345,456,11,22,33,44,0,499,5,5"
  for stem in rwkv7_small_A rwkv4_small_A; do
    "$BIN" --model "$DATA/official_ref/$stem.pth" --tokens "$toks" --max-tokens 0 --dump-logits "$TMP/$stem.f32" \
      --threads 2 >/dev/null 2>"$TMP/e"
    python3 - "$TMP/$stem.f32" "$DATA/official_ref/$stem.logits.f32" <<'PY' && ok "dump-logits $stem" || bad "dump-logits $stem"
import array, sys
a = array.array('f'); a.frombytes(open(sys.argv[1], 'rb').read())
b = array.array('f'); b.frombytes(open(sys.argv[2], 'rb').read())
assert len(a) == len(b) == 32 * 512, (len(a), len(b))
for t in range(32):
    ra, rb = a[t*512:(t+1)*512], b[t*512:(t+1)*512]
    m = sum(rb) / 512
    sd = (sum((x - m) ** 2 for x in rb) / 512) ** 0.5
    d = max(abs(x - y) for x, y in zip(ra, rb))
    assert d / sd < 1e-4, (t, d, sd)
PY
  done

  # Greedy generation on a tiny trained byte model is deterministic text.
  "$BIN" --model "$DATA/rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin" --prompt "The" --max-tokens 30 --temperature 0 \
    >"$TMP/g1" 2>/dev/null
  "$BIN" --model "$DATA/rwkv_cpp/tiny-rwkv-7v0-834K-FP16.bin" --prompt "The" --max-tokens 30 --temperature 0 \
    >"$TMP/g2" 2>/dev/null
  [ -s "$TMP/g1" ] && cmp -s "$TMP/g1" "$TMP/g2" && ok "greedy text FP32 == FP16 file" || bad "greedy text FP32 == FP16 file"

  # A stop string ends generation and is not printed.
  "$BIN" --model "$DATA/rwkv_cpp/tiny-rwkv-7v0-834K-FP32.bin" --prompt "The" --max-tokens 30 --temperature 0 \
    --stop "$(grep -o "[a-z]" "$TMP/g1" | head -n 1)" >"$TMP/g3" 2>"$TMP/e"
  grep -q "stop string" "$TMP/e" && ok "stop string" || bad "stop string"
else
  echo "skip: test data not found at $DATA (set RWKV_TESTDATA)"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
