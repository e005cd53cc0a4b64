#!/usr/bin/env bash
# The sidecar on Redis when Redis fails, for each failure policy (deny, allow, local): a fixed request rate
# from tollgate-openloop while Redis is first healthy, then slowed (DEBUG SLEEP: the server stops answering
# for FAULT seconds) or killed (SIGKILL, started again after FAULT seconds), then healthy again. For each
# policy and fault: requests/s answered 2xx, p99 and the share of 503s before, during and after the fault,
# and the recovery time (from the end of the fault to the last answer that was not a 2xx or took more
# than 5 x the p99 before the fault, at least 20 ms).
#
#   bash Benchmarks/failure-modes.sh
#
# Environment: RATE (requests/s, default 2000), BEFORE, FAULT, AFTER (seconds, default 3, 3, 5),
# CONNECTIONS (default 32), PEERS (default ../shared/peers), TOLLGATE_SKIP_BUILD=1, TOLLGATE_BIN,
# OPENLOOP_BIN, BENCH_ROWS / BENCH_OUT (as in proxy-compare.sh), KEEP=1 keeps the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATE=${RATE:-2000}
BEFORE=${BEFORE:-3}
FAULT=${FAULT:-3}
AFTER=${AFTER:-5}
CONNS=${CONNECTIONS:-32}
REDIS_PORT=${TOLLGATE_FAILURE_REDIS_PORT:-6397}
PEERS=$(cd "${PEERS:-../shared/peers}" && pwd)
WORK=$(mktemp -d /tmp/tollgate-failure-bench.XXXXXX)
need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need redis-server; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx redis-server redis-tools >/dev/null
fi
if [ -z "${TOLLGATE_SKIP_BUILD:-}" ]; then
  echo "building tollgate and tollgate-openloop (release)…" >&2
  swift build -c release --scratch-path .build-release --product tollgate >/dev/null
fi
TOLLGATE="${TOLLGATE_BIN:-$(swift build -c release --scratch-path .build-release --show-bin-path)/tollgate}"
if [ -z "${OPENLOOP_BIN:-}" ]; then
  (cd Benchmarks && swift build -c release --product tollgate-openloop >/dev/null)
  OPENLOOP_BIN="$(cd Benchmarks && swift build -c release --show-bin-path)/tollgate-openloop"
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/run"
nginx -p "$WORK/run" -c "$PEERS/upstream-nginx.conf" & pids+=($!)
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$WORK" \
    --logfile "$WORK/redis.log" --enable-debug-command local
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "failure-modes: redis-server did not start on port $REDIS_PORT (see $WORK/redis.log)" >&2
  return 1
}
start_redis

KEY=wz_test_failure_00000000000
cat > "$WORK/keys.yaml" <<YAML
keys:
  - sha256: $(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
    org: org_failure
    plan: three
    scopes: [messages:send]
YAML
# The sidecar benchmark's three-limit plan, never denying (Benchmarks/redis/plans.yaml).
PLAN="plans:
$(awk '/^  three:/ { on = 1; print; next } on && /^  [^ ]/ { on = 0 } on' Benchmarks/redis/plans.yaml)"
port=18093
declare -A PORT
for policy in deny allow local; do
  cat > "$WORK/$policy.yaml" <<YAML
$PLAN
server: { port: $port, admin_port: $((port + 1000)), access_log: off }
upstream: { url: "http://127.0.0.1:18080" }
store: { backend: redis, url: "redis://127.0.0.1:$REDIS_PORT", failure_policy: $policy }
keys: { source: file, file: keys.yaml }
routes:
  - { method: POST, path: /api/v1/messages/send, scope: messages:send, cost: 1 }
unmatched: pass
YAML
  "$TOLLGATE" serve --config "$WORK/$policy.yaml" >"$WORK/$policy.log" 2>&1 & pids+=($!)
  PORT[$policy]=$port
  port=$((port + 1))
done
for p in 18080 "${PORT[@]}"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done

now() { date +%s.%N; }
# Runs the load with a fault in the middle: fault-kind policy -> the open-loop summary in $WORK/summary.json,
# the requests in $WORK/requests.csv and the fault's start and end (epoch seconds) in $WORK/fault.
run_with_fault() {
  local kind=$1 policy=$2 load start end
  command=("$OPENLOOP_BIN" --url "http://127.0.0.1:${PORT[$policy]}/api/v1/messages/send" --rate "$RATE"
    --seconds "$((BEFORE + FAULT + AFTER))" --warmup 1 --connections "$CONNS" --method POST
    --header "Authorization: Bearer $KEY" --header "Content-Type: application/json"
    --body '{"to":"+15551234567","text":"hello"}' --requests "$WORK/requests.csv")
  "${command[@]}" >"$WORK/summary.json" & load=$!
  # The measured period starts 1.2 s after launch (0.2 s to connect, 1 s of warm-up).
  sleep "$(awk -v b="$BEFORE" 'BEGIN { print b + 1.2 }')"
  start=$(now)
  case "$kind" in
    slow)
      redis-cli -p "$REDIS_PORT" debug sleep "$FAULT" >/dev/null
      end=$(now) ;;
    kill)
      kill -9 "$(redis-cli -p "$REDIS_PORT" info server | tr -d '\r' | awk -F: '/^process_id:/ { print $2 }')"
      sleep "$FAULT"
      start_redis
      end=$(now) ;;
  esac
  echo "$start $end" >"$WORK/fault"
  wait "$load"
}

printf '%-44s | %-28s | %-28s | %-28s | %s\n' "policy, fault" "before: 2xx/s p99 503%" "during: 2xx/s p99 503%" \
  "after: 2xx/s p99 503%" "recovery"
for kind in slow kill; do
  for policy in deny allow local; do
    case "$kind" in
      slow) label="$policy policy, Redis stalled (DEBUG SLEEP $FAULT s)" ;;
      kill) label="$policy policy, Redis killed, restarted after $FAULT s" ;;
    esac
    run_with_fault "$kind" "$policy"
    python3 "$ROOT/Benchmarks/report/failure.py" "$WORK/summary.json" "$WORK/requests.csv" "$WORK/fault" \
      --label "$label" --policy "$policy" --fault "$kind" --command "$(printf '%q ' "${command[@]}")"
  done
done
