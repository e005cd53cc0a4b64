#!/usr/bin/env bash
# Redis-backed checks, all against one redis-server in one run:
#
#   bash Benchmarks/redis-compare.sh [SECONDS]     (default 8 seconds per client case)
#   ROUNDS=3 CHECKS=200000                         (rounds of the CPU table, checks per case and round)
#   CLIENT_CHECKS=400000                           (commands per redis-benchmark run of part 3)
#
# 1. Redis CPU per check: the server's own CPU time (user + system, from INFO) over the checks made, with
#    the same redis-benchmark settings for every row (-c 4 -P 32, 512 keys): Tollgate's generated scripts
#    for a one-bucket plan and the three-limit plan of the sidecar benchmark, the previous version's
#    generic script for both (the baseline), Envoy's rate limit service (INCRBY + EXPIRE per limit,
#    pipelined) for three limits, and a GCRA script after go-redis/redis_rate for one limit. Rounds are
#    interleaved; the table shows the median and the range.
# 2. Redis memory per key (MEMORY USAGE) of each layout.
# 3. Tollgate's own client (`tollgate redis-load`, the three-limit plan) against redis-benchmark running
#    the same script: checks/s, p50, p99, the server's CPU per check and the commands each server read
#    carried, at 1 to 512 callers.
# 4. Group commit of hot keys: the three-limit plan with coalescing on and off, one hot key, a Zipf(1.1)
#    spread over 10,000 keys and uniform keys, at 1, 16 and 128 callers (closed loop); then the same
#    three spreads as an open loop (`redis-load --rate`) at the same rate for on and off, half the lower
#    128-caller throughput of the two, so that p50/p99/p99.9 compare at equal throughput.
# 5. The Python `limits` library (moving window), the reference many users know.
# 6. Redis Cluster (run before part 5): three primaries on loopback, the three-limit plan over 10,000 keys
#    of as many organizations, beside the single server with the same keys and callers in the same run:
#    checks/s, Redis CPU per check (all primaries' CPU over all checks), each primary's share of the calls
#    and CPU per call, and the MOVED answers during the run (none once the map is warm).
#
# Tollgate's callers run on the event loops of the client's connections (`tollgate redis-load`'s default,
# a task executor preference per caller: no thread hop per check); the "pool" column runs the same
# callers on Swift's cooperative thread pool (`--no-affinity`). With more than one caller Tollgate uses
# one connection per event loop (TOLLGATE_BENCH_CONNS, default: the number of cores), and redis-benchmark
# the same number of clients with the same number of commands in flight.
#
# TOLLGATE_SKIP_BUILD=1 uses the release build as it is (TOLLGATE_BIN=path: that binary instead);
# TOLLGATE_CALLGRIND=1 also counts Redis' instructions per check (valgrind; a few minutes more);
# TOLLGATE_CPU_ONLY=1 stops after parts 1 and 2; TOLLGATE_SKIP_COALESCE=1 skips part 4;
# TOLLGATE_SKIP_PYTHON=1 skips part 5; TOLLGATE_SKIP_CLUSTER=1 skips part 6; TOLLGATE_CLUSTER_ONLY=1 runs
# part 6 alone. BENCH_ROWS (a file): each row is also appended to it as a JSON line
# (Benchmarks/report/row.py), for `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
ROUNDS=${ROUNDS:-3}
CHECKS=${CHECKS:-200000}
PORT=${TOLLGATE_BENCH_REDIS_PORT:-6399}
WORK=$(mktemp -d /tmp/tollgate-redis-bench.XXXXXX)
PLANS=Benchmarks/redis/plans.yaml

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server || ! need redis-benchmark; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi

if [ -z "${TOLLGATE_SKIP_BUILD:-}" ]; then
  echo "building tollgate (release)…" >&2
  swift build -c release --scratch-path .build-release --product tollgate >/dev/null
fi
TOLLGATE=${TOLLGATE_BIN:-"$(swift build -c release --scratch-path .build-release --show-bin-path)/tollgate"}

redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --logfile "$WORK/redis.log" --dir "$WORK"
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
cli() { redis-cli -p "$PORT" "$@"; }
bench_row() { [ -z "${BENCH_ROWS:-}" ] || python3 Benchmarks/report/row.py "$@"; }

CONNS=${TOLLGATE_BENCH_CONNS:-$(nproc)}

# ---- 1. Redis CPU per check -------------------------------------------------------------------------
if [ -z "${TOLLGATE_CLUSTER_ONLY:-}" ]; then
ORG=org-bench
load_script() { cli script load "$(cat "$1")"; }
# Each case is a command for redis-benchmark, kept NUL-separated (a script's first argument is empty).
case_file() { local name=$1; shift; printf '%s\0' "$@" >"$WORK/case-$name"; }
case_args() { mapfile -d '' -t ARGS <"$WORK/case-$1"; }
# The EVALSHA of one check of a plan for API key __rand_int__ (--previous-script: the previous version's).
evalsha_case() {  # name plan [--previous-script]
  "$TOLLGATE" redis-load --config "$PLANS" --plan "$2" --organization "$ORG" --print-script ${3:-} >"$WORK/$1.lua"
  local sha; sha=$(load_script "$WORK/$1.lua")
  mapfile -t REST < <("$TOLLGATE" redis-load --config "$PLANS" --plan "$2" --organization "$ORG" --print-arguments ${3:-})
  case_file "$1" evalsha "$sha" "${REST[@]}"
  # The keys of API key 000000000001, one of the 512 that redis-benchmark visits.
  printf '%s\n' "${REST[@]:1:${REST[0]}}" | sed 's/__rand_int__/000000000001/' >"$WORK/keys-$1"
  # A plan whose calendar quotas keep their periods in their keys: most checks call the script that
  # reads them there, which needs the keys started by the script that is sent the periods (once a
  # period per organization). The benchmark measures the former, so each server gets one call of the
  # latter first (seed_case).
  if [ -z "${3:-}" ]; then
    "$TOLLGATE" redis-load --config "$PLANS" --plan "$2" --organization "$ORG" --print-script --periods-in-arguments >"$WORK/$1.seed.lua"
    if ! cmp -s "$WORK/$1.lua" "$WORK/$1.seed.lua"; then
      mapfile -t REST < <("$TOLLGATE" redis-load --config "$PLANS" --plan "$2" --organization "$ORG" --print-arguments --periods-in-arguments)
      printf '%s\0' "${REST[@]}" | sed -z 's/__rand_int__/000000000001/' >"$WORK/seed-$1"
    fi
  fi
}
seed_case() {  # case port: one call of the script that starts a period's keys, where the case needs it
  [ -f "$WORK/seed-$1" ] || return 0
  local args; mapfile -d '' -t args <"$WORK/seed-$1"
  redis-cli -p "$2" eval "$(cat "$WORK/$1.seed.lua")" "${args[@]}" >/dev/null
}
case_file floor evalsha "$(cli script load "return 1")" 0
evalsha_case one one
evalsha_case one-previous one --previous-script
evalsha_case three three
evalsha_case three-previous three --previous-script
# A million a second: at a billion, an emission interval of 10^-9 s is lost in the double that holds the
# arrival time (about 3 x 10^8 s), the state never changes and GCRA would never write.
case_file gcra evalsha "$(load_script Benchmarks/redis/gcra.lua)" 1 "gcra:{$ORG}:k__rand_int__" 1000000 1000000 1 1
ENVOY_KEY=rl_messaging_api_key_k__rand_int___minute_1796656020
case_file envoy-incrby incrby "$ENVOY_KEY" 1
case_file envoy-expire expire "$ENVOY_KEY" 60
ORDER="floor one one-previous gcra three three-previous envoy-incrby envoy-expire"

# Each Tollgate case must really decide (a script that answers "send the periods" writes nothing):
# its SETs are counted (cmdstat_set) and must be at least one a check.
sets() { cli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_set:calls=\([0-9]*\),.*/\1/p'; }
server_cpu() { cli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'; }
cpu_case() {  # name -> µs of server CPU per command
  local before after errors
  case_args "$1"
  seed_case "$1" "$PORT"
  cli config resetstat >/dev/null
  before=$(server_cpu)
  redis-benchmark -p "$PORT" -c 4 -P 32 -n "$CHECKS" -r 512 "${ARGS[@]}" >/dev/null 2>"$WORK/rb.err" || true
  after=$(server_cpu)
  case $1 in
    one|three) [ "$(sets)" -ge "$CHECKS" ] || { echo "case $1: $(sets) SETs for $CHECKS checks: the script did not decide" >&2; exit 1; } ;;
  esac
  errors=$(cli info errorstats | tr -d '\r' | grep -c '^errorstat_' || true)
  if [ "$errors" != "0" ]; then
    echo "case $1: the server answered errors: $(cli info errorstats | tr -d '\r' | tail -n +2 | head -3)" >&2
    exit 1
  fi
  python3 -c "print(f'{($after - $before) * 1e6 / $CHECKS:.3f}')"
}
declare -A RESULTS
for _ in $(seq "$ROUNDS"); do
  for name in $ORDER; do RESULTS[$name]="${RESULTS[$name]:-} $(cpu_case "$name")"; done
done
for name in $ORDER; do echo "$name ${RESULTS[$name]}"; done >"$WORK/cpu.txt"

# ---- 2. Memory per key ------------------------------------------------------------------------------
# Each case runs once more just before its keys are measured: short windows' keys expire within seconds.
usage() {  # case key
  case_args "$1"
  seed_case "$1" "$PORT"
  redis-benchmark -p "$PORT" -c 4 -P 32 -n 20000 -r 512 "${ARGS[@]}" >/dev/null 2>&1 || true
  cli memory usage "$2" | tr -d '\r'
}
key() { sed -n "${2}p" "$WORK/keys-$1"; }
{
  echo "Tollgate, three-limit plan, per-key scope (bucket + sliding window, one key)|$(usage three "$(key three 1)")"
  echo "Tollgate, three-limit plan, organization scope (calendar month, one key)|$(usage three "$(key three 2)")"
  echo "Tollgate, one-bucket plan (one key)|$(usage one "$(key one 1)")"
  echo "previous version, three-limit plan, one key per limit (bucket, window, month)|$(usage three-previous "$(key three-previous 1)") $(usage three-previous "$(key three-previous 2)") $(usage three-previous "$(key three-previous 3)")"
  echo "Envoy-style counter (one key per limit)|$(usage envoy-incrby "${ENVOY_KEY/__rand_int__/000000000001}")"
  echo "GCRA (one key per limit)|$(usage gcra "gcra:{$ORG}:k000000000001")"
} >"$WORK/memory.txt"

python3 - "$WORK/cpu.txt" "$WORK/memory.txt" "$ROUNDS" "$CHECKS" "$PORT" <<'PY'
import statistics, sys
sys.path.insert(0, "Benchmarks/report")
import row
rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in open(sys.argv[1])}
med = {k: statistics.median(v) for k, v in rows.items()}
work = sys.argv[1].rsplit("/", 1)[0]
def command(case):
    words = open(f"{work}/case-{case}").read().split("\0")[:-1]
    return f"redis-benchmark -p {sys.argv[5]} -c 4 -P 32 -n {sys.argv[4]} -r 512 " + " ".join(w or "''" for w in words)
PEERS = {"one": ("gcra", "GCRA script after go-redis/redis_rate"), "three": ("envoy", "Envoy-style INCRBY + EXPIRE per limit")}
def metric(values):
    return {"redis_cpu_us_per_check": {"value": round(statistics.median(values), 3), "unit": "Redis CPU us/check"}}
def show(label, values, note="", case=None):
    print(f"  {label:<68} {statistics.median(values):7.2f}  [{min(values):6.2f}-{max(values):6.2f}]  {note}")
    if case is None:
        return
    entry = {"table": "redis-cpu", "row": label, "metrics": metric(values),
             "command": command(case) if case != "envoy" else command("envoy-incrby") + "; " + command("envoy-expire"),
             "attributes": {"id": case, "min": min(values), "max": max(values), "rounds": len(values)}}
    if case in PEERS:
        peer, name = PEERS[case]
        values = rows[peer] if peer != "envoy" else [3 * (a + b) for a, b in zip(rows["envoy-incrby"], rows["envoy-expire"])]
        entry["peer"] = {"name": name, "metrics": metric(values), "command": command(peer if peer != "envoy" else "envoy-incrby")}
    row.append(entry)
print(f"Redis CPU per check, µs: median [range] of {sys.argv[3]} interleaved rounds of {sys.argv[4]} checks "
      "(redis-benchmark -c 4 -P 32, 512 keys)")
show("EVALSHA of `return 1` (the floor of any script)", rows["floor"], case="floor")
show("Tollgate, one token bucket (generated script)", rows["one"], case="one")
show("Tollgate, one token bucket, previous version's script", rows["one-previous"], case="one-previous")
show("GCRA script after go-redis/redis_rate, one limit", rows["gcra"], case="gcra")
show("Tollgate, three limits (generated script, two keys)", rows["three"], case="three")
show("Tollgate, three limits, previous version's script (three keys)", rows["three-previous"], case="three-previous")
envoy = [3 * (a + b) for a, b in zip(rows["envoy-incrby"], rows["envoy-expire"])]
show("Envoy-style INCRBY + EXPIRE per limit, three limits, pipelined", envoy, "(not atomic; counts refused hits)", case="envoy")
three, one, gcra, prev = med["three"], med["one"], med["gcra"], med["three-previous"]
def goal(text, ok): print(f"  {text:<80} {'met' if ok else 'MISSED'}")
print("Goals (from the medians):")
goal(f"three-limit plan <= 10 µs of Redis CPU per check (aim 8): {three:.2f} µs", three <= 10)
goal(f"one token bucket <= 0.8x the GCRA script: {one / gcra:.2f}x", one / gcra <= 0.8)
goal(f"three-limit plan >= 3x cheaper than the previous script: {prev / three:.2f}x", prev / three >= 3)
print()
print("Redis memory per key (MEMORY USAGE, bytes)")
budget = []
for line in open(sys.argv[2]):
    label, value = line.rstrip("\n").split("|")
    print(f"  {label:<80} {value}")
    row.append({"table": "redis-memory", "row": label, "command": "MEMORY USAGE <key>",
                "metrics": {"bytes_per_key": {"value": sum(int(v) for v in value.split()), "unit": "bytes"}}})
    if label.startswith("Tollgate, three-limit plan"): budget.append(int(value))
goal(f"<= 140 bytes per scope of the three-limit plan: {', '.join(map(str, budget))}", all(b <= 140 for b in budget))
PY
echo

# ---- 1b. Redis instructions per check (callgrind): the same cases, counted rather than timed -----------
# CPU time moves with whatever else the machine runs; instruction counts do not. Each case gets a fresh
# redis-server under valgrind: the case runs 6,000 times to warm up, then 3,000 times counted.
if [ -n "${TOLLGATE_CALLGRIND:-}" ]; then
  need valgrind || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
  CG_PORT=$((PORT + 1))
  instructions() {  # case -> instructions per command
    local dir="$WORK/cg-$1" pid total
    mkdir -p "$dir"
    valgrind --tool=callgrind --callgrind-out-file="$dir/out.%p" redis-server --port "$CG_PORT" --bind 127.0.0.1 \
      --save '' --appendonly no >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 150); do redis-cli -p "$CG_PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
    # The scripts under the same SHAs as on the main server.
    for lua in "$WORK"/*.lua Benchmarks/redis/gcra.lua; do redis-cli -p "$CG_PORT" script load "$(cat "$lua")" >/dev/null; done
    redis-cli -p "$CG_PORT" script load "return 1" >/dev/null
    seed_case "$1" "$CG_PORT"
    case_args "$1"
    redis-benchmark -p "$CG_PORT" -c 4 -P 32 -n 6000 -r 512 "${ARGS[@]}" >/dev/null 2>&1 || true
    callgrind_control -z "$pid" >/dev/null 2>&1
    redis-benchmark -p "$CG_PORT" -c 4 -P 32 -n 3000 -r 512 "${ARGS[@]}" >/dev/null 2>&1 || true
    callgrind_control -d "$pid" >/dev/null 2>&1
    redis-cli -p "$CG_PORT" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    total=$(grep -h '^summary:' "$dir"/out.*.1 | awk '{ print $2 }')
    echo $(( total / 3000 ))
  }
  for name in $ORDER; do echo "$name $(instructions "$name")"; done >"$WORK/instructions.txt"
  python3 - "$WORK/instructions.txt" <<'PY'
import sys
rows = {line.split()[0]: int(line.split()[1]) for line in open(sys.argv[1])}
labels = [("floor", "EVALSHA of `return 1`"), ("one", "Tollgate, one token bucket"), ("one-previous", "Tollgate, one token bucket, previous script"),
          ("gcra", "GCRA, one limit"), ("three", "Tollgate, three limits"), ("three-previous", "Tollgate, three limits, previous script")]
print("Redis instructions per check (callgrind; 3,000 commands after 6,000 to warm up)")
for key, label in labels:
    print(f"  {label:<68} {rows[key]:>9,}  ({rows[key] / rows['three']:.2f}x the three-limit script)")
envoy = 3 * (rows["envoy-incrby"] + rows["envoy-expire"])
print(f"  {'Envoy-style INCRBY + EXPIRE per limit, three limits':<68} {envoy:>9,}  ({envoy / rows['three']:.2f}x)")
print(f"  one token bucket / GCRA: {rows['one'] / rows['gcra']:.2f}x; previous / generated, three limits: {rows['three-previous'] / rows['three']:.2f}x")
PY
  echo
fi
[ -n "${TOLLGATE_CPU_ONLY:-}" ] && exit 0

# ---- 3. Tollgate's own client ----------------------------------------------------------------------
case_args three
THREE=("${ARGS[@]}")
rb() {  # redis-benchmark clients pipeline n -> "rps p50_ms p99_ms"
  redis-benchmark -p "$PORT" -c "$1" -P "$2" -n "$3" -r 512 --csv "${THREE[@]}" 2>/dev/null |
    tail -n 1 | tr -d '"' | awk -F, '{ printf "%d %.3f %.3f", $2, $5, $7 }'
}
tg() {  # tollgate callers connections [extra flags] -> "rps p50_ms p99_ms failures cpu_us commands_per_read"
  "$TOLLGATE" redis-load --url "redis://127.0.0.1:$PORT" --config "$PLANS" --plan three --callers "$1" --connections "$2" \
    --seconds "$SECS" --organization "$ORG" ${3:-} |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(r["checks_per_second"]), r["p50_us"]/1000, r["p99_us"]/1000, r["failures"], r.get("redis_cpu_us_per_check", 0), r.get("commands_per_read", 0))'
}
echo "Tollgate's client, three-limit plan (Redis µs/check, and EVALSHA calls per server read, from INFO during the run)"
printf '%-8s %-6s | %-48s | %-26s | %-26s | %s\n' callers conns "Tollgate checks/s p50 p99 Redis-us/check cmds/read" \
  "redis-benchmark (same script)" "Tollgate, callers on pool" "Tollgate / redis-benchmark"
best=0
for P in 1 8 32 64 128; do
  read -r rps _ _ <<<"$(rb 4 "$P" "${CLIENT_CHECKS:-400000}")"; [ "$rps" -gt "$best" ] && best=$rps
done
one_p50=""; one_rb_p50=""; high=""
for C in 1 16 128 512; do
  if [ "$C" -eq 1 ]; then K=1; else K=$CONNS; fi
  P=$(( C / K ))
  read -r trps tp50 tp99 tfail tcpu tcpr <<<"$(tg "$C" "$K")"
  read -r prps pp50 pp99 pfail _ _ <<<"$(tg "$C" "$K" --no-affinity)"
  n=$(( C == 1 ? ${CLIENT_CHECKS:-400000} / 4 : ${CLIENT_CHECKS:-400000} ))
  read -r rrps rp50 rp99 <<<"$(rb "$K" "$P" "$n")"
  ratio=$(python3 -c "print(f'{$trps/$rrps:.2f}x (same clients/pipeline), {$trps/$best:.2f}x of best')")
  printf '%-8s %-6s | %8d %7.3fms %7.3fms %7.2f %6.2f | %8d %7.3fms %7.3fms | %8d %7.3fms %7.3fms | %s\n' \
    "$C" "$K" "$trps" "$tp50" "$tp99" "$tcpu" "$tcpr" "$rrps" "$rp50" "$rp99" "$prps" "$pp50" "$pp99" "$ratio"
  [ "$tfail" = "0" ] && [ "$pfail" = "0" ] || echo "  (Tollgate reported $tfail + $pfail failed checks)"
  bench_row --table redis-client --row "$C callers, $K connections" --set "callers=$C" --set "connections=$K" \
    --command "tollgate redis-load --url redis://127.0.0.1:$PORT --config $PLANS --plan three --callers $C --connections $K --seconds $SECS --organization $ORG" \
    --metric "checks_per_s=$trps:checks/s" --metric "p50_ms=$tp50:ms" --metric "p99_ms=$tp99:ms" \
    --metric "redis_cpu_us_per_check=$tcpu:Redis CPU us/check" --metric "commands_per_read=$tcpr:EVALSHA/read" \
    --set "pool_checks_per_s=$prps" --set "pool_p99_ms=$pp99" --set "failures=$((tfail + pfail))" \
    --peer "redis-benchmark, same script" --peer-command "redis-benchmark -p $PORT -c $K -P $P -n $n -r 512 --csv <the three-limit EVALSHA>" \
    --peer-metric "checks_per_s=$rrps:checks/s" --peer-metric "p50_ms=$rp50:ms" --peer-metric "p99_ms=$rp99:ms"
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

# ---- 4. Group commit of hot keys -------------------------------------------------------------------
# The three-limit plan through Tollgate's client with coalescing on (the default) and off, for one hot key,
# a Zipf(1.1) spread over 10,000 keys and uniform keys, at 1, 16 and 128 callers.
if [ -z "${TOLLGATE_SKIP_COALESCE:-}" ]; then
  declare -A MAXRATE
  echo
  echo "Group commit, three-limit plan: coalescing on | off (Redis µs/check from INFO; checks/call = mean batch)"
  printf '%-26s %-7s | %-50s | %s\n' keys callers "on: checks/s p50 p99 Redis-us/check checks/call" "off: checks/s p50 p99 Redis-us/check"
  cg() {  # callers connections flags... -> "rps p50_ms p99_ms cpu_us checks_per_call"
    local callers=$1 conns=$2; shift 2
    "$TOLLGATE" redis-load --url "redis://127.0.0.1:$PORT" --config "$PLANS" --plan three --callers "$callers" --connections "$conns" \
      --seconds "$SECS" --organization "co-$RANDOM" "$@" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(r["checks_per_second"]), r["p50_us"]/1000, r["p99_us"]/1000, r.get("redis_cpu_us_per_check", 0), r.get("checks_per_call", 0))'
  }
  for spread in "one hot key|--shared-key" "Zipf(1.1), 10,000 keys|--keys 10000 --distribution zipf" "uniform, 10,000 keys|--keys 10000"; do
    label=${spread%%|*}; read -r -a flags <<<"${spread#*|}"
    for C in 1 16 128; do
      if [ "$C" -eq 1 ]; then K=1; else K=$CONNS; fi
      read -r ors op50 op99 ocpu obatch <<<"$(cg "$C" "$K" "${flags[@]}")"
      read -r frs fp50 fp99 fcpu _ <<<"$(cg "$C" "$K" "${flags[@]}" --no-coalesce)"
      printf '%-26s %-7s | %8d %7.3fms %7.3fms %7.2f %6.2f | %8d %7.3fms %7.3fms %7.2f\n' "$label" "$C" \
        "$ors" "$op50" "$op99" "$ocpu" "$obatch" "$frs" "$fp50" "$fp99" "$fcpu"
      [ "$C" -eq 128 ] && MAXRATE[$label]=$(( ors < frs ? ors : frs ))
      bench_row --table redis-coalesce --row "$label, $C callers" --set "callers=$C" --set "spread=${spread#*|}" \
        --command "tollgate redis-load --url redis://127.0.0.1:$PORT --config $PLANS --plan three --callers $C --connections $K --seconds $SECS ${spread#*|}" \
        --metric "checks_per_s=$ors:checks/s" --metric "p50_ms=$op50:ms" --metric "p99_ms=$op99:ms" \
        --metric "redis_cpu_us_per_check=$ocpu:Redis CPU us/check" --metric "checks_per_call=$obatch:checks/call" \
        --peer "coalescing off" --peer-command "the same with --no-coalesce" --peer-metric "checks_per_s=$frs:checks/s" \
        --peer-metric "p50_ms=$fp50:ms" --peer-metric "p99_ms=$fp99:ms" --peer-metric "redis_cpu_us_per_check=$fcpu:Redis CPU us/check"
    done
  done
  # The same load as an open loop at the same rate for both (half the lower of the two closed-loop
  # rates at 128 callers): latency from when each check was due, so p99 compares at equal throughput.
  echo
  echo "Group commit, open loop at half the 128-caller rate: on | on, two calls in flight per key | off (p50 p99 p99.9, Redis µs/check)"
  for spread in "one hot key|--shared-key" "Zipf(1.1), 10,000 keys|--keys 10000 --distribution zipf" "uniform, 10,000 keys|--keys 10000"; do
    label=${spread%%|*}; read -r -a flags <<<"${spread#*|}"
    rate=$(( ${MAXRATE[$label]} / 2 ))
    ol() {
      "$TOLLGATE" redis-load --url "redis://127.0.0.1:$PORT" --config "$PLANS" --plan three --callers 128 --connections "$CONNS" \
        --seconds "$SECS" --organization "co-$RANDOM" --rate "$rate" "$@" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(r["checks_per_second"]), r["p50_us"]/1000, r["p99_us"]/1000, r["p999_us"]/1000, r.get("redis_cpu_us_per_check", 0))'
    }
    read -r ors op50 op99 op999 ocpu <<<"$(ol "${flags[@]}")"
    read -r trs tp50 tp99 tp999 tcpu <<<"$(ol "${flags[@]}" --in-flight 2)"
    read -r frs fp50 fp99 fp999 fcpu <<<"$(ol "${flags[@]}" --no-coalesce)"
    printf '%-26s %7d/s | %7.3fms %7.3fms %7.3fms %6.2f | %7.3fms %7.3fms %7.3fms %6.2f | %7.3fms %7.3fms %7.3fms %6.2f\n' \
      "$label" "$rate" "$op50" "$op99" "$op999" "$ocpu" "$tp50" "$tp99" "$tp999" "$tcpu" "$fp50" "$fp99" "$fp999" "$fcpu"
  done
fi

fi  # TOLLGATE_CLUSTER_ONLY

# ---- 6. Redis Cluster ------------------------------------------------------------------------------
if [ -z "${TOLLGATE_SKIP_CLUSTER:-}" ]; then
  CLUSTER_PORTS=("$((PORT + 1))" "$((PORT + 2))" "$((PORT + 3))")  # their cluster buses: 10,000 above
  for p in "${CLUSTER_PORTS[@]}"; do
    mkdir -p "$WORK/cluster-$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf --save '' \
      --appendonly no --daemonize yes --logfile "$WORK/cluster-$p/redis.log" --dir "$WORK/cluster-$p"
  done
  trap 'for p in "$PORT" "${CLUSTER_PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done; rm -rf "$WORK"' EXIT
  for p in "${CLUSTER_PORTS[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") --cluster-yes >/dev/null
  for p in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$p" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
  done
  SEEDS=$(printf 'redis://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}"); SEEDS=${SEEDS%,}
  echo
  echo "Redis Cluster, three primaries, three-limit plan, uniform over 10,000 keys of as many organizations"
  printf '%-7s | %-32s | %-32s | %-9s | %-8s | %s\n' callers "one server: checks/s Redis-us/check" \
    "cluster: checks/s Redis-us/check" "CPU ratio" "MOVED" "per primary: share of calls, Redis us/call"
  cl() {  # callers target-flags... -> JSON
    local callers=$1; shift
    "$TOLLGATE" redis-load --config "$PLANS" --plan three --callers "$callers" --connections "$CONNS" --seconds "$SECS" \
      --organization "cl-$RANDOM" --keys 10000 "$@"
  }
  for C in 16 128; do
    single=$(cl "$C" --url "redis://127.0.0.1:$PORT")
    clustered=$(cl "$C" --cluster "$SEEDS")
    python3 - "$C" "$single" "$clustered" <<'PY'
import json, sys
callers, one, many = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ratio = many["redis_cpu_us_per_check"] / one["redis_cpu_us_per_check"]
nodes = "  ".join(f'{n["node"]} {n["calls_share"] * 100:.1f}% {n["redis_cpu_us_per_call"]:.2f}' for n in many["nodes"])
print(f'{callers:<7} | {int(one["checks_per_second"]):>9} {one["redis_cpu_us_per_check"]:>8.2f}{"":14} | '
      f'{int(many["checks_per_second"]):>9} {many["redis_cpu_us_per_check"]:>8.2f}{"":14} | {ratio:>8.2f}x | {many["moved"]:>8} | {nodes}')
PY
  done
  echo "goal: Redis CPU per check on the cluster <= 1.1x the single server's; no MOVED with a warm map"
fi

# ---- 5. Python limits ----------------------------------------------------------------------------
[ -n "${TOLLGATE_SKIP_PYTHON:-}${TOLLGATE_CLUSTER_ONLY:-}" ] && exit 0
python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q limits redis >/dev/null
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
print(f"Python limits (MovingWindowRateLimiter, Redis storage, 1 caller): {int(len(lat) / secs)} checks/s, "
      f"p50 {lat[len(lat) // 2] * 1000:.3f}ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.3f}ms")
sys.path.insert(0, "Benchmarks/report")
import row
row.append({"table": "python-limits", "row": "MovingWindowRateLimiter, Redis storage, 1 caller",
            "command": "limiter.hit(parse('1000000000/minute'), 'pylimits', str(i % 512)) in a loop (redis-compare.sh part 5)",
            "metrics": {"checks_per_s": {"value": int(len(lat) / secs), "unit": "checks/s"},
                        "p50_ms": {"value": round(lat[len(lat) // 2] * 1000, 3), "unit": "ms"},
                        "p99_ms": {"value": round(lat[int(len(lat) * 0.99)] * 1000, 3), "unit": "ms"}}})
PY
