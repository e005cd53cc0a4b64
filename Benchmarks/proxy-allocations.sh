#!/usr/bin/env bash
# Allocations (and Swift reference-count operations) per proxied request, counted exactly with uprobes
# on malloc, swift_retain and swift_release: Tollgate's sidecar on the in-memory store beside nginx
# limit_req, in front of the same upstream (shared/peers/upstream-nginx.conf), under wrk. Unlike CPU
# time, these counts do not depend on what else the machine is doing: a change to the data path shows
# in them at once. The probes slow the processes down; only the counts mean something here.
#
#   bash Benchmarks/proxy-allocations.sh [SECONDS]      (default 5 s; needs root and linux-perf)
#
# Environment: PEERS (default ../shared/peers), TOLLGATE_SKIP_BUILD=1 to reuse the release build,
# TOLLGATE_BIN (another tollgate binary).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
PEERS=$(cd "${PEERS:-../shared/peers}" && pwd)
WORK=$(mktemp -d /tmp/tollgate-alloc-bench.XXXXXX)
need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need perf; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk linux-perf >/dev/null
fi
if [ -z "${TOLLGATE_SKIP_BUILD:-}" ]; then
  echo "building tollgate (release)…" >&2
  swift build -c release --scratch-path .build-release --product tollgate >/dev/null
fi
TOLLGATE="${TOLLGATE_BIN:-$(swift build -c release --scratch-path .build-release --show-bin-path)/tollgate}"
LIBC=$(ldd "$TOLLGATE" | awk '$1 == "libc.so.6" { print $3 }')
SWIFTCORE=$(ldd "$TOLLGATE" | awk '$1 == "libswiftCore.so" { print $3 }')

pids=()
probes=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${probes[@]}"; do perf probe -q -d "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
perf probe -q -x "$LIBC" --add 'tg_malloc=malloc' && probes+=(probe_libc:tg_malloc)
perf probe -q -x "$SWIFTCORE" --add 'tg_retain=swift_retain' && probes+=(probe_libswiftCore:tg_retain)
perf probe -q -x "$SWIFTCORE" --add 'tg_release=swift_release' && probes+=(probe_libswiftCore:tg_release)

mkdir -p "$WORK/run"
nginx -p "$WORK/run" -c "$PEERS/upstream-nginx.conf" & pids+=($!)
nginx -p "$WORK/run" -g "master_process off;" -c "$PEERS/nginx-limit-req.conf" & NGINX_PID=$!; pids+=($NGINX_PID)
KEY=wz_test_bench_000000000000
SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
printf 'keys:\n  - sha256: %s\n    org: org_bench\n    plan: bench\n    scopes: [messages:send]\n' "$SHA" > "$WORK/keys.yaml"
cat > "$WORK/memory.yaml" <<YAML
plans:
  bench:
    limits:
      - { name: burst, algorithm: token_bucket, capacity: 1000000000, refill: { tokens: 1000000000, per: 1s } }
      - { name: minute, algorithm: sliding_window, limit: 4000000000, window: 1m }
      - { name: month, algorithm: calendar, limit: 1000000000000, period: month, scope: organization }
server: { port: 18191, admin_port: 19191, access_log: off }
upstream: { url: "http://127.0.0.1:18080" }
store: { backend: memory }
keys: { source: file, file: keys.yaml }
routes:
  - { method: POST, path: /api/v1/messages/send, scope: messages:send, cost: 1 }
YAML
"$TOLLGATE" serve --config "$WORK/memory.yaml" >"$WORK/tollgate.log" 2>&1 & TOLLGATE_PID=$!; pids+=($TOLLGATE_PID)
for port in 18080 18082 18191; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"to":"+15551234567","text":"hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA

count() {  # name pid port: per-request counts of each probe, while wrk runs
  local url="http://127.0.0.1:$3/api/v1/messages/send" events
  events=$(IFS=,; echo "${probes[*]}")
  wrk -t1 -c8 -d2s -s "$WORK/post.lua" "$url" >/dev/null  # warm: connections open, key cached
  perf stat -x, -e "$events" -p "$2" -o "$WORK/stat.$1" -- sleep $((SECS + 1)) & local stat=$!
  sleep 0.5
  wrk -t1 -c8 -d"${SECS}s" -s "$WORK/post.lua" "$url" >"$WORK/wrk.$1"
  wait "$stat" || true
  awk -F, -v name="$1" -v n="$(awk '/ requests in / { print $1 }' "$WORK/wrk.$1")" '
    $3 ~ /tg_malloc/ { m = $1 } $3 ~ /tg_retain/ { r = $1 } $3 ~ /tg_release/ { l = $1 }
    END { printf "%-34s %12.1f %12.1f %12.1f %10d\n", name, m / n, r / n, l / n, n }' "$WORK/stat.$1"
}
printf '%-34s %12s %12s %12s %10s\n' "per request" malloc swift_retain swift_release requests
count "nginx limit_req (never rejects)" "$NGINX_PID" 18082
count "Tollgate, in-memory store" "$TOLLGATE_PID" 18191
