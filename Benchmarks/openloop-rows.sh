# Open-loop rows for proxy-compare.sh (sourced by it when TOLLGATE_OPENLOOP=1, with its servers still up):
# each server at 25, 50 and 75 % of the requests/s it reached in its closed-loop row, at a fixed rate from
# tollgate-openloop (Benchmarks/Sources/tollgate-openloop), latency measured from each request's due time.
# The levels are interleaved (all servers at 25 %, then at 50 %, …) so that noise from other work on the
# machine falls on every server alike.
#
# Environment: OPENLOOP_SECONDS (default 10 per row), OPENLOOP_BIN (default: the release build of the
# Benchmarks package, built if missing), BENCH_OUT (the result folder: histograms go to its hist/).
OPENLOOP_SECONDS=${OPENLOOP_SECONDS:-10}
if [ -z "${OPENLOOP_BIN:-}" ]; then
  (cd "$ROOT/Benchmarks" && swift build -c release --product tollgate-openloop >/dev/null)
  OPENLOOP_BIN="$(cd "$ROOT/Benchmarks" && swift build -c release --show-bin-path)/tollgate-openloop"
fi
HIST=${BENCH_OUT:-$WORK}/hist
mkdir -p "$HIST"
echo
echo "Open loop (tollgate-openloop, ${OPENLOOP_SECONDS}s per row, $CONNS connections; latency from the due time)"
printf '%-34s %6s %10s %10s %9s %9s %9s %8s\n' target share "rate" achieved p50 p99 p99.9 non-2xx
declare -A OPEN_P99
for share in 25 50 75; do
  for row in "nginx limit_req (never rejects)|nginx|http://127.0.0.1:18082/api/v1/messages/send" \
             "Tollgate, in-memory store|memory|http://127.0.0.1:18091/api/v1/messages/send" \
             "Tollgate, Redis store|redis|http://127.0.0.1:18092/api/v1/messages/send"; do
    IFS='|' read -r name id url <<<"$row"
    rate=$(awk -v r="${RPS[$name]}" -v s="$share" 'BEGIN { printf "%d", r * s / 100 }')
    if [ "$rate" -lt 1 ]; then echo "  $name: no maximum measured, skipped" >&2; continue; fi
    command=("$OPENLOOP_BIN" --url "$url" --rate "$rate" --seconds "$OPENLOOP_SECONDS" --connections "$CONNS" --threads 2
      --method POST --header "Authorization: Bearer $KEY" --header "Content-Type: application/json"
      --body '{"to":"+15551234567","text":"hello"}' --histogram "$HIST/openloop-$id-$share.hgrm")
    "${command[@]}" >"$WORK/openloop.json"
    read -r achieved p50 p99 p999 bad <<<"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); o=r["outcomes"]
print(round(r["achieved_rate"]), r["p50_ms"], r["p99_ms"], r["p99_9_ms"], o["unanswered"] + sum(v for k, v in o["byStatus"].items() if not k.startswith("2")))' "$WORK/openloop.json")"
    printf '%-34s %5s%% %10s %10s %8sms %8sms %8sms %8s\n' "$name" "$share" "$rate" "$achieved" "$p50" "$p99" "$p999" "$bad"
    [ -n "${BENCH_ROWS:-}" ] || continue
    m=(--metric "target_rate=$rate:requests/s" --metric "achieved_rate=$achieved:requests/s" --metric "p50_ms=$p50:ms"
       --metric "p99_ms=$p99:ms" --metric "p99_9_ms=$p999:ms" --metric "non_2xx=$bad:responses")
    [ "$id" = nginx ] && NGINX_OPEN=("${m[@]}")
    peer=()
    if [ "$id" != nginx ] && [ -n "${NGINX_OPEN[*]:-}" ]; then
      peer=(--peer "nginx limit_req at $share %")
      for ((i = 1; i < ${#NGINX_OPEN[@]}; i += 2)); do peer+=(--peer-metric "${NGINX_OPEN[i]}"); done
    fi
    python3 "$ROOT/Benchmarks/report/row.py" --table openloop --row "$name, $share % of max" --set "id=$id" \
      --set "share=$share" --set "target=$name" --set "histogram=hist/openloop-$id-$share.hgrm" \
      --json "percentiles=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["percentiles"]))' "$WORK/openloop.json")" \
      --command "$(printf '%q ' "${command[@]}")" "${m[@]}" "${peer[@]}"
  done
  NGINX_OPEN=()
done
