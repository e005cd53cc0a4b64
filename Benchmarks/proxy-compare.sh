#!/usr/bin/env bash
# The sidecar under load, in one run against one upstream (shared/peers/upstream-nginx.conf):
# the upstream directly, nginx with limit_req (shared/peers/nginx-limit-req.conf, :18082 never rejects),
# HAProxy with a stick-table limit (shared/peers/haproxy.cfg, :18072 never rejects),
# Tollgate on the in-memory store and Tollgate on Redis — every limit set so high that nothing is refused,
# so each row measures the cost of proxying plus limiting. "CPU us/request" is the CPU time of the row's
# own server process (nginx: master and workers) per request answered: unlike requests/s, it hardly
# depends on what else the machine is doing.
#
#   bash Benchmarks/proxy-compare.sh [SECONDS]        (default 10 s per row; wrk -t2 -c64)
#
# Environment: PEERS (default ../shared/peers), TOLLGATE_SKIP_BUILD=1 to reuse the release build, TOLLGATE_BIN
# (another tollgate binary), POOL_SIZE (the sidecars' upstream.pool_size, default 64),
# CONNECTIONS (default 64), THREADS (the sidecars' server.threads; default one per core, while the peers
# run one worker: THREADS=1 compares like with like), BENCH_ROWS (a file: each row is also appended to it as a JSON line, for
# `make bench`), TOLLGATE_OPENLOOP=1 (then open-loop rows at 25/50/75 % of each server's maximum, from
# Benchmarks/openloop-rows.sh, against the same servers), TOLLGATE_TRACING=1 (then one more row: the
# in-memory sidecar with tracing on, every trace sampled, spans posted to the upstream nginx, which
# answers them 200 and drops them; compared with the in-memory row, where tracing is off).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${1:-10}
CONNS=${CONNECTIONS:-64}
PEERS=$(cd "${PEERS:-../shared/peers}" && pwd)
WORK=$(mktemp -d /tmp/tollgate-proxy-bench.XXXXXX)
need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need redis-server || ! need haproxy; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk redis-server redis-tools haproxy >/dev/null
fi
if [ -z "${TOLLGATE_SKIP_BUILD:-}" ]; then
  echo "building tollgate (release)…" >&2
  swift build -c release --scratch-path .build-release --product tollgate >/dev/null
fi
TOLLGATE="${TOLLGATE_BIN:-$(swift build -c release --scratch-path .build-release --show-bin-path)/tollgate}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; redis-cli -p 6398 shutdown nosave >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/run"
nginx -p "$WORK/run" -c "$PEERS/upstream-nginx.conf" & UPSTREAM_PID=$!; pids+=($UPSTREAM_PID)
nginx -p "$WORK/run" -c "$PEERS/nginx-limit-req.conf" & LIMITREQ_PID=$!; pids+=($LIMITREQ_PID)
# HAProxy writes its pid file relative to the folder it starts in.
(cd "$WORK" && exec haproxy -db -f "$PEERS/haproxy.cfg" >"$WORK/haproxy.log" 2>&1) & HAPROXY_PID=$!; pids+=($HAPROXY_PID)
redis-server --port 6398 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$WORK" --logfile "$WORK/redis.log"

# A plan that never refuses and one key on it.
KEY=wz_test_bench_000000000000
SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
cat > "$WORK/keys.yaml" <<YAML
keys:
  - sha256: $SHA
    org: org_bench
    plan: bench
    scopes: [messages:send]
YAML
config() {  # port admin backend
  cat <<YAML
plans:
  bench:
    limits:
      - { name: burst, algorithm: token_bucket, capacity: 1000000000, refill: { tokens: 1000000000, per: 1s } }
      - { name: minute, algorithm: sliding_window, limit: 4000000000, window: 1m }
      - { name: month, algorithm: calendar, limit: 1000000000000, period: month, scope: organization }
server: { port: $1, admin_port: $2, access_log: off${THREADS:+, threads: $THREADS} }
upstream: { url: "http://127.0.0.1:18080", pool_size: ${POOL_SIZE:-64} }
store: $3
keys: { source: file, file: keys.yaml }
routes:
  - { method: POST, path: /api/v1/messages/send, scope: messages:send, cost: 1 }
unmatched: pass
YAML
}
config 18091 19091 "{ backend: memory }" > "$WORK/memory.yaml"
config 18092 19092 "{ backend: redis, url: \"redis://127.0.0.1:6398\", failure_policy: deny }" > "$WORK/redis.yaml"
"$TOLLGATE" serve --config "$WORK/memory.yaml" >"$WORK/memory.log" 2>&1 & MEMORY_PID=$!; pids+=($MEMORY_PID)
"$TOLLGATE" serve --config "$WORK/redis.yaml" >"$WORK/redis-sidecar.log" 2>&1 & REDIS_PID=$!; pids+=($REDIS_PID)
TRACED_PORTS=()
if [ -n "${TOLLGATE_TRACING:-}" ]; then
  { config 18093 19093 "{ backend: memory }"; echo 'tracing: { enabled: true, endpoint: "http://127.0.0.1:18080", sample_ratio: 1 }'; } >"$WORK/traced.yaml"
  "$TOLLGATE" serve --config "$WORK/traced.yaml" >"$WORK/traced.log" 2>&1 & TRACED_PID=$!; pids+=($TRACED_PID)
  TRACED_PORTS=(18093)
fi
for port in 18080 18082 18072 18091 18092 "${TRACED_PORTS[@]}"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"to":"+15551234567","text":"hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
# CPU time (clock ticks) of a process and its children (nginx's workers).
ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1"); do
    [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
REDIS_SERVER_PID=$(redis-cli -p 6398 info server | awk -F: '/^process_id:/ { print $2 + 0 }')
run() {  # url pid -> "rps p50 p99 non2xx cpu-us-per-request"; Redis server's and the upstream's CPU per request in $WORK/redis.cpu, $WORK/upstream.cpu
  local before after redis_before redis_after upstream_before upstream_after
  before=$(ticks "$2"); redis_before=$(ticks "$REDIS_SERVER_PID"); upstream_before=$(ticks "$UPSTREAM_PID")
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/post.lua" "$1" 2>/dev/null >"$WORK/wrk.out"
  after=$(ticks "$2"); redis_after=$(ticks "$REDIS_SERVER_PID"); upstream_after=$(ticks "$UPSTREAM_PID")
  awk -v ticks=$((redis_after - redis_before)) -v hz="$HZ" \
    '/ requests in / { n = $1 } END { printf "%.1f", (n > 0 ? ticks / hz * 1e6 / n : 0) }' "$WORK/wrk.out" >"$WORK/redis.cpu"
  awk -v ticks=$((upstream_after - upstream_before)) -v hz="$HZ" \
    '/ requests in / { n = $1 } END { printf "%.1f", (n > 0 ? ticks / hz * 1e6 / n : 0) }' "$WORK/wrk.out" >"$WORK/upstream.cpu"
  awk -v ticks=$((after - before)) -v hz="$HZ" '
    /Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %s %s %s %.1f", rps, p50, p99, (bad == "" ? 0 : bad), (n > 0 ? ticks / hz * 1e6 / n : 0) }' "$WORK/wrk.out"
}
# Each row as a JSON line in $BENCH_ROWS (Benchmarks/report/row.py); Tollgate's rows name nginx as their peer.
ms() { awk -v t="$1" 'BEGIN { v = t + 0; if (t ~ /us$/) v /= 1000; else if (t ~ /ms$/) v += 0; else if (t ~ /s$/) v *= 1000; printf "%.3f", v }'; }
proxy_bench_row() {  # name url rps p50 p99 non2xx cpu redis-cpu upstream-cpu
  [ -n "${BENCH_ROWS:-}" ] || return 0
  local id peer=() m=(--metric "requests_per_s=$3:requests/s" --metric "p50_ms=$(ms "$4"):ms" --metric "p99_ms=$(ms "$5"):ms"
    --metric "non_2xx=$6:responses" --metric "cpu_us_per_request=$7:CPU us/request" --metric "redis_cpu_us_per_request=$8:CPU us/request"
    --metric "upstream_cpu_us_per_request=$9:CPU us/request")
  case "$1" in upstream*) id=upstream ;; nginx*) id=nginx; NGINX_ROW=("${m[@]}") ;; *memory*) id=memory ;; *) id=redis ;; esac
  case "$id" in memory|redis) peer=(--peer "nginx limit_req (never rejects)" --peer-command "wrk -t2 -c$CONNS -d${SECS}s --latency -s post.lua http://127.0.0.1:18082/api/v1/messages/send")
    for ((i = 1; i < ${#NGINX_ROW[@]}; i += 2)); do peer+=(--peer-metric "${NGINX_ROW[i]}"); done ;; esac
  python3 "$ROOT/Benchmarks/report/row.py" --table proxy --row "$1" --set "id=$id" --set "connections=$CONNS" \
    --command "wrk -t2 -c$CONNS -d${SECS}s --latency -s post.lua $2" "${m[@]}" "${peer[@]}"
}
printf '%-34s %12s %10s %10s %8s %14s\n' target "requests/s" p50 p99 non-2xx "CPU us/request"
declare -A RPS P99 CPU
for row in "upstream directly|http://127.0.0.1:18080/api/v1/messages/send|$UPSTREAM_PID" \
           "nginx limit_req (never rejects)|http://127.0.0.1:18082/api/v1/messages/send|$LIMITREQ_PID" \
           "HAProxy stick table (never rejects)|http://127.0.0.1:18072/api/v1/messages/send|$HAPROXY_PID" \
           "Tollgate, in-memory store|http://127.0.0.1:18091/api/v1/messages/send|$MEMORY_PID" \
           "Tollgate, Redis store|http://127.0.0.1:18092/api/v1/messages/send|$REDIS_PID"; do
  IFS='|' read -r name url pid <<<"$row"
  read -r rps p50 p99 bad cpu <<<"$(run "$url" "$pid")"
  printf '%-34s %12s %10s %10s %8s %14s\n' "$name" "$rps" "$p50" "$p99" "$bad" "$cpu"
  RPS[$name]=$rps; P99[$name]=$p99; CPU[$name]=$cpu
  [ "$pid" = "$REDIS_PID" ] && REDIS_SERVER_CPU=$(cat "$WORK/redis.cpu")
  proxy_bench_row "$name" "$url" "$rps" "$p50" "$p99" "$bad" "$cpu" "$(cat "$WORK/redis.cpu")" "$(cat "$WORK/upstream.cpu")"
done
if [ -n "${TOLLGATE_TRACING:-}" ]; then
  name="Tollgate, in-memory, tracing on"
  read -r rps p50 p99 bad cpu <<<"$(run "http://127.0.0.1:18093/api/v1/messages/send" "$TRACED_PID")"
  printf '%-34s %12s %10s %10s %8s %14s\n' "$name" "$rps" "$p50" "$p99" "$bad" "$cpu"
  python3 -c 'import sys; on, off, on_rps, off_rps = map(float, sys.argv[1:5]); print(f"tracing on / off (in-memory): CPU per request {on / off:.2f}x, throughput {on_rps / off_rps:.2f}x")' \
    "$cpu" "${CPU[Tollgate, in-memory store]}" "$rps" "${RPS[Tollgate, in-memory store]}"
fi
echo "Redis server's own CPU during the Redis row: $REDIS_SERVER_CPU us/request (the plan's three limits; concurrent checks of its one key share calls)"
python3 - "${RPS[nginx limit_req (never rejects)]}" "${RPS[Tollgate, Redis store]}" "${RPS[Tollgate, in-memory store]}" \
  "${CPU[nginx limit_req (never rejects)]}" "${CPU[Tollgate, Redis store]}" "${CPU[Tollgate, in-memory store]}" \
  "${CPU[HAProxy stick table (never rejects)]}" <<'PY'
import sys
nginx, redis, memory, nginx_cpu, redis_cpu, memory_cpu, haproxy_cpu = map(float, sys.argv[1:8])
print(f"Tollgate on Redis / nginx limit_req throughput: {redis / nginx:.2f}x (goal >= 1.0x); in-memory: {memory / nginx:.2f}x")
print(f"CPU per request, Tollgate / nginx limit_req (the proxy's own process only): Redis {redis_cpu / nginx_cpu:.2f}x, in-memory {memory_cpu / nginx_cpu:.2f}x (goal <= 1.0x); HAProxy {haproxy_cpu / nginx_cpu:.2f}x")
PY
if [ -n "${TOLLGATE_OPENLOOP:-}" ]; then
  # shellcheck source=Benchmarks/openloop-rows.sh
  . "$ROOT/Benchmarks/openloop-rows.sh"
fi
