#!/usr/bin/env bash
# Redis-backed checks: Tollgate's client against redis-benchmark running the same script (the ceiling)
# and the Python `limits` library (the reference many users know), all against one redis-server, in one run.
#
#   bash Benchmarks/redis-compare.sh [SECONDS]     (default 8 seconds per case)
#
# Prints one table: checks/s, p50 and p99 per caller count, and Tollgate's share of redis-benchmark.
#
# Tollgate's callers run on the event loops of the client's connections (`tollgate redis-load`'s default,
# a task executor preference per caller: no thread hop per check); the "pool" column runs the same
# callers on Swift's cooperative thread pool (`--no-affinity`), as a caller that does not choose its
# thread gets. With more than one caller Tollgate uses one connection per event loop (TOLLGATE_BENCH_CONNS,
# default: the number of cores, which is the number of loops), and redis-benchmark the same number of
# clients with the same number of commands in flight.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
PORT=${TOLLGATE_BENCH_REDIS_PORT:-6399}
WORK=$(mktemp -d /tmp/tollgate-redis-bench.XXXXXX)

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server || ! need redis-benchmark; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q limits redis >/dev/null
fi

if [ -z "${TOLLGATE_SKIP_BUILD:-}" ]; then
  echo "building tollgate (release)…" >&2
  swift build -c release --scratch-path .build-release --product tollgate >/dev/null
fi
TOLLGATE="$(swift build -c release --scratch-path .build-release --show-bin-path)/tollgate"

redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --logfile "$WORK/redis.log" --dir "$WORK"
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

"$TOLLGATE" redis-load --print-script > "$WORK/check.lua"
SHA=$(redis-cli -p "$PORT" script load "$(cat "$WORK/check.lua")")
# The same single fixed-window limit the load command checks (never denying), on one of 512 keys.
mapfile -t ARGS < <("$TOLLGATE" redis-load --print-arguments)

rb() {  # redis-benchmark clients pipeline -> "rps p50_ms p99_ms"
  redis-benchmark -p "$PORT" -c "$1" -P "$2" -n "$3" -r 512 --csv \
    evalsha "$SHA" 1 "tg:{org-bench}:000000:k__rand_int__" "${ARGS[@]}" 2>/dev/null |
    tail -n 1 | tr -d '"' | awk -F, '{ printf "%d %.3f %.3f", $2, $5, $7 }'
}
tg() {  # tollgate callers connections [extra flags] -> "rps p50_ms p99_ms failures"
  "$TOLLGATE" redis-load --url "redis://127.0.0.1:$PORT" --callers "$1" --connections "$2" --seconds "$SECS" --organization org-bench ${3:-} |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(r["checks_per_second"]), r["p50_us"]/1000, r["p99_us"]/1000, r["failures"])'
}
py_limits() {  # sequential hits with the limits library (moving window, Redis storage)
  "$WORK/venv/bin/python" - "$PORT" "$SECS" <<'PY'
import sys, time
from limits import storage, strategies, parse
port, secs = int(sys.argv[1]), float(sys.argv[2])
s = storage.storage_from_string(f"redis://127.0.0.1:{port}")
limiter = strategies.MovingWindowRateLimiter(s)
item = parse("1000000000/minute")
lat = []
end = time.perf_counter() + secs
i = 0
while time.perf_counter() < end:
    t0 = time.perf_counter()
    limiter.hit(item, "pylimits", str(i % 512))
    lat.append(time.perf_counter() - t0)
    i += 1
lat.sort()
elapsed = secs
print(int(len(lat) / elapsed), round(lat[len(lat) // 2] * 1000, 3), round(lat[int(len(lat) * 0.99)] * 1000, 3))
PY
}

CONNS=${TOLLGATE_BENCH_CONNS:-$(nproc)}
printf '%-8s %-6s | %-26s | %-26s | %-26s | %s\n' callers conns "Tollgate checks/s p50 p99" "redis-benchmark (same script)" "Tollgate, callers on pool" "Tollgate / redis-benchmark"
best=0
for P in 1 8 32 64 128; do
  read -r rps _ _ <<<"$(rb 4 "$P" 400000)"; [ "$rps" -gt "$best" ] && best=$rps
done
one_p50=""; one_rb_p50=""; high=""
for C in 1 16 128 512; do
  if [ "$C" -eq 1 ]; then K=1; else K=$CONNS; fi
  P=$(( C / K ))
  read -r trps tp50 tp99 tfail <<<"$(tg "$C" "$K")"
  read -r prps pp50 pp99 pfail <<<"$(tg "$C" "$K" --no-affinity)"
  n=$(( C == 1 ? 100000 : 400000 ))
  read -r rrps rp50 rp99 <<<"$(rb "$K" "$P" "$n")"
  ratio=$(python3 -c "print(f'{$trps/$rrps:.2f}x (same clients/pipeline), {$trps/$best:.2f}x of best')")
  printf '%-8s %-6s | %8d %7.3fms %7.3fms | %8d %7.3fms %7.3fms | %8d %7.3fms %7.3fms | %s\n' \
    "$C" "$K" "$trps" "$tp50" "$tp99" "$rrps" "$rp50" "$rp99" "$prps" "$pp50" "$pp99" "$ratio"
  [ "$tfail" = "0" ] && [ "$pfail" = "0" ] || echo "  (Tollgate reported $tfail + $pfail failed checks)"
  [ "$C" -eq 1 ] && one_p50=$tp50 && one_rb_p50=$rp50
  [ "$C" -ge 128 ] && high="$high $trps"
done
echo "redis-benchmark best throughput for the script (4 clients, pipeline swept 1-128): $best checks/s"
python3 - "$one_p50" "$one_rb_p50" "$best" $high <<'PY'
import sys
one, rb1, best, high = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), [float(x) for x in sys.argv[4:]]
print(f"one caller: Tollgate p50 {one:.3f} ms vs redis-benchmark -c 1 -P 1 p50 {rb1:.3f} ms: {one / rb1:.2f}x (goal <= 1.2x)")
print("128+ callers: Tollgate / redis-benchmark best: " + ", ".join(f"{h / best:.2f}x" for h in high) + " (goal >= 0.90x)")
PY
read -r prps pp50 pp99 <<<"$(py_limits)"
printf 'Python limits (MovingWindowRateLimiter, Redis storage, 1 caller): %d checks/s, p50 %.3fms, p99 %.3fms\n' "$prps" "$pp50" "$pp99"
