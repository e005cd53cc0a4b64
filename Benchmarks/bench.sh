#!/usr/bin/env bash
# Every comparison in one go (`make bench`), kept as data: Benchmarks/results/<UTC timestamp>/ receives
# results.json (every row of every table, the machine, the run), hist/ (HdrHistogram percentile files of
# the open-loop rows), logs/ (each stage's output), report.md and plots/ (report/report.py).
#
#   bash Benchmarks/bench.sh            the full run (about 30 minutes on 2 cores)
#   QUICK=1 bash Benchmarks/bench.sh    a reduced run of a few minutes: a smoke check, not figures to quote
#
# Environment: STAGES (the stages to run, default all: "core redis proxy failure http1"), RESULTS (the parent
# folder, default Benchmarks/results), TOLLGATE_SKIP_BUILD=1 (use the release builds as they are), PEERS and
# the variables of each script (passed through).
# A stage that fails is recorded as such and the others still run; the exit status is then 1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-}
[ "$QUICK" = 0 ] && QUICK=
STAGES=${STAGES:-core redis proxy failure http1}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${RESULTS:-$ROOT/Benchmarks/results}/$STAMP
mkdir -p "$OUT/logs" "$OUT/hist"
export BENCH_ROWS=$OUT/rows.jsonl BENCH_OUT=$OUT BENCH_STARTED=$(date +%s)
: >"$BENCH_ROWS"
echo "results: $OUT"

# Seconds each stage is expected to take (quick, full): for the "time left" on the terminal.
declare -A ESTIMATE=([build]="120 120" [venv]="40 40" [core]="150 660" [redis]="150 480" [proxy]="70 170"
                     [failure]="80 100" [http1]="60 60" [report]="20 20")
estimate() { local e=(${ESTIMATE[$1]}); [ -n "$QUICK" ] && echo "${e[0]}" || echo "${e[1]}"; }

# The machine, and what else it runs, before anything starts; the load average every 5 s during the run.
python3 Benchmarks/report/machine.py describe >"$OUT/machine.json" || echo '{}' >"$OUT/machine.json"
( while :; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/load.txt"; sleep 5; done ) &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null' EXIT

ALL=(build venv $STAGES report)
STAGE_JSON=()
FAILED=0
stage() {  # name command...
  local name=$1 index left=0 s start status
  shift
  for ((index = 0; index < ${#ALL[@]}; index++)); do [ "${ALL[index]}" = "$name" ] && break; done
  for s in "${ALL[@]:index}"; do left=$((left + $(estimate "$s"))); done
  export BENCH_STAGE="stage $((index + 1))/${#ALL[@]} $name" BENCH_ESTIMATED_END=$(($(date +%s) + left))
  printf '\n=== %s (about %dm%02ds; about %dm%02ds left in all) ===\n' "$BENCH_STAGE" \
    $(($(estimate "$name") / 60)) $(($(estimate "$name") % 60)) $((left / 60)) $((left % 60))
  start=$(date +%s)
  "$@" 2>&1 | tee "$OUT/logs/$name.log"
  status=${PIPESTATUS[0]}
  if [ "$status" = 0 ]; then status=ok; else status="failed ($status)"; FAILED=1; echo "=== $name failed: see $OUT/logs/$name.log"; fi
  STAGE_JSON+=("{\"name\": \"$name\", \"status\": \"$status\", \"seconds\": $(($(date +%s) - start)), \"log\": \"logs/$name.log\"}")
}

build() {
  [ -z "${TOLLGATE_SKIP_BUILD:-}" ] || { echo "TOLLGATE_SKIP_BUILD: using the release builds as they are"; return 0; }
  swift build -c release --scratch-path .build-release --product tollgate &&
    (cd Benchmarks && swift build -c release --product tollgate-openloop && swift build -c release --product core-compare)
}
venv() {
  [ -x Benchmarks/.venv/bin/python ] || python3 -m venv Benchmarks/.venv || return 1
  Benchmarks/.venv/bin/python -c 'import matplotlib' 2>/dev/null || Benchmarks/.venv/bin/pip install -q matplotlib
}
core() { if [ -n "$QUICK" ]; then ROUNDS=1 KEYS=100000 bash Benchmarks/compare-core.sh; else bash Benchmarks/compare-core.sh; fi; }
redis() {
  if [ -n "$QUICK" ]; then ROUNDS=1 CHECKS=20000 CLIENT_CHECKS=40000 TOLLGATE_SKIP_BUILD=1 bash Benchmarks/redis-compare.sh 2
  else TOLLGATE_SKIP_BUILD=1 bash Benchmarks/redis-compare.sh; fi
}
proxy() {
  export TOLLGATE_OPENLOOP=1 OPENLOOP_BIN
  OPENLOOP_BIN="$(cd Benchmarks && swift build -c release --show-bin-path)/tollgate-openloop"
  if [ -n "$QUICK" ]; then OPENLOOP_SECONDS=3 TOLLGATE_SKIP_BUILD=1 bash Benchmarks/proxy-compare.sh 3
  else TOLLGATE_SKIP_BUILD=1 bash Benchmarks/proxy-compare.sh; fi
}
failure() {
  export OPENLOOP_BIN
  OPENLOOP_BIN="$(cd Benchmarks && swift build -c release --show-bin-path)/tollgate-openloop"
  if [ -n "$QUICK" ]; then RATE=1000 BEFORE=2 FAULT=2 AFTER=3 TOLLGATE_SKIP_BUILD=1 bash Benchmarks/failure-modes.sh
  else TOLLGATE_SKIP_BUILD=1 bash Benchmarks/failure-modes.sh; fi
}
http1() { if [ -n "$QUICK" ]; then bash Benchmarks/http1-parse.sh 200000; else bash Benchmarks/http1-parse.sh; fi; }
report() {
  local stages
  stages=$(IFS=,; echo "${STAGE_JSON[*]}")
  cat >"$OUT/stages.json" <<JSON
{"started": "$STAMP", "finished": "$(date -u +%Y-%m-%dT%H%M%SZ)", "quick": $([ -n "$QUICK" ] && echo true || echo false),
 "command": "make bench${QUICK:+ QUICK=1}", "stages": [$stages]}
JSON
  kill "$SAMPLER" 2>/dev/null
  python3 - "$OUT/machine.json" <<'PY'
import json, subprocess, sys
path = sys.argv[1]
machine = json.load(open(path))
machine["busy_at_end"] = json.loads(subprocess.run([sys.executable, "Benchmarks/report/machine.py", "busy"],
                                                   capture_output=True, text=True).stdout or "[]")
machine["load_average_at_end"] = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
json.dump(machine, open(path, "w"), indent=2, sort_keys=True)
PY
  Benchmarks/.venv/bin/python Benchmarks/report/report.py "$OUT"
}

stage build build
stage venv venv
for s in $STAGES; do
  case "$s" in
    core|redis|proxy|failure|http1) stage "$s" "$s" ;;
    *) echo "bench: unknown stage '$s' (known: core redis proxy failure http1)" >&2; FAILED=1 ;;
  esac
done
stage report report
ln -sfn "$STAMP" "$(dirname "$OUT")/latest"
echo
echo "results: $OUT/results.json, report: $OUT/report.md"
[ -n "$QUICK" ] && echo "(QUICK: a smoke check; take figures to quote from a full run on a quiet machine)"
exit "$FAILED"
