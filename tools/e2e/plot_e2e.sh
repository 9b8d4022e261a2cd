#!/usr/bin/env bash
# Plots the results of tools/e2e/gpu_e2e_bundle.sh run with gnuplot (Debian:
# gnuplot-nox) and jq.
#
#   tools/e2e/plot_e2e.sh RESULTS_DIR [OUT_DIR]   # OUT_DIR defaults to docs/
#
# RESULTS_DIR holds one folder per model (1.5b/, 7.2b/, ...) as the run
# writes them. Writes OUT_DIR/e2e-throughput.png (tokens/s vs concurrency,
# end-to-end beside engine-only), OUT_DIR/e2e-latency.png (TTFT p50 and ITL
# p50/p90/p99 vs concurrency) and OUT_DIR/e2e-context-itl.png (ITL vs
# context length). TITLE (environment) is added to each title, e.g. the card
# and date.
set -euo pipefail
res=${1:?usage: $0 RESULTS_DIR [OUT_DIR]}
out=${2:-docs}
command -v gnuplot >/dev/null || { echo "needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
title=${TITLE:-}

models=()
for d in "$res"/*/; do
  m=$(basename "$d")
  ls "$d"/loadgen-c*.json >/dev/null 2>&1 || continue
  models+=("$m")
  # concurrency  e2e_steady  engine  ttft_p50  itl_p50 itl_p90 itl_p99  (ms)
  for f in "$d"/loadgen-c*.json; do
    c=$(jq '.config.concurrency' "$f")
    eng=0
    [[ -f "$d/bench.json" ]] && eng=$(jq --argjson c "$c" '[.results[] | select(.batch == $c) | .tokens_per_s][0] // 0' "$d/bench.json")
    jq -r --argjson eng "$eng" '[.config.concurrency, .throughput.steady_tokens_per_s, $eng,
        .ttft_s.p50*1e3, .itl_s.p50*1e3, .itl_s.p90*1e3, .itl_s.p99*1e3] | @tsv' "$f"
  done | sort -n >"$tmp/$m.tsv"
  # context  itl_p50  itl_p90  itl_p99 (ms), one row per run
  if [[ -f "$d/context.json" ]]; then
    jq -r '.context_runs[] | select(.error == "") | [.context_tokens, .itl_s.p50*1e3, .itl_s.p90*1e3, .itl_s.p99*1e3] | @tsv' \
      "$d/context.json" | sort -n >"$tmp/$m.ctx.tsv"
  fi
done
[[ ${#models[@]} -gt 0 ]] || { echo "no loadgen-c*.json under $res/*/" >&2; exit 1; }

common='set terminal pngcairo size 900,560 font ",11"; set grid; set key top left; set logscale x 2;'
{
  echo "$common set output '$out/e2e-throughput.png';"
  echo "set title 'Decode throughput vs concurrency ${title}'; set xlabel 'concurrent streams (= engine batch)';"
  echo "set ylabel 'generated tokens/s'; set logscale y; set format y '%.0f';"
  printf "plot "
  for m in "${models[@]}"; do
    printf "'%s' using 1:2 with linespoints lw 2 pt 7 title '%s end-to-end (gRPC, steady)', " "$tmp/$m.tsv" "$m"
    printf "'%s' using 1:(\$3>0?\$3:1/0) with linespoints lw 2 dt 2 pt 6 title '%s engine only', " "$tmp/$m.tsv" "$m"
  done
  echo ""
} | sed 's/, $//' >"$tmp/thr.gp"
{
  echo "$common set output '$out/e2e-latency.png';"
  echo "set title 'Latency vs concurrency ${title}'; set xlabel 'concurrent streams'; set ylabel 'ms'; set logscale y;"
  printf "plot "
  for m in "${models[@]}"; do
    printf "'%s' using 1:5 with linespoints lw 2 pt 7 title '%s ITL p50', " "$tmp/$m.tsv" "$m"
    printf "'%s' using 1:6 with linespoints lw 2 pt 5 title '%s ITL p90', " "$tmp/$m.tsv" "$m"
    printf "'%s' using 1:7 with linespoints lw 2 pt 9 title '%s ITL p99', " "$tmp/$m.tsv" "$m"
    printf "'%s' using 1:4 with linespoints lw 2 dt 2 pt 6 title '%s TTFT p50', " "$tmp/$m.tsv" "$m"
  done
  echo ""
} | sed 's/, $//' >"$tmp/lat.gp"
gnuplot "$tmp/thr.gp"
gnuplot "$tmp/lat.gp"
ctx_models=()
for m in "${models[@]}"; do [[ -s "$tmp/$m.ctx.tsv" ]] && ctx_models+=("$m"); done
if [[ ${#ctx_models[@]} -gt 0 ]]; then
  {
    echo "set terminal pngcairo size 900,560 font \",11\"; set grid; set key top left; set logscale x 10;"
    echo "set output '$out/e2e-context-itl.png';"
    echo "set title 'Inter-token latency vs context length (one session alone) ${title}';"
    echo "set xlabel 'tokens of context (prefilled)'; set ylabel 'ms per token'; set yrange [0:*];"
    printf "plot "
    for m in "${ctx_models[@]}"; do
      printf "'%s' using 1:2 with linespoints lw 2 pt 7 title '%s ITL p50', " "$tmp/$m.ctx.tsv" "$m"
      printf "'%s' using 1:4 with points pt 9 ps 1.5 title '%s ITL p99', " "$tmp/$m.ctx.tsv" "$m"
    done
    echo ""
  } | sed 's/, $//' >"$tmp/ctx.gp"
  gnuplot "$tmp/ctx.gp"
fi
ls -l "$out"/e2e-*.png
