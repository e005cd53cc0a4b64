#!/usr/bin/env bash
# Tollgate's in-process limiter (MemoryStore.checkNow) against the JVM peer, Guava's RateLimiter in a
# ConcurrentHashMap (shared/peers/guava/Keyed.java), on this machine, in one command:
#
#     bash Benchmarks/compare-core.sh
#
# Builds core-compare in release, compiles Keyed.java, then runs every case ROUNDS times, Tollgate and
# Guava back to back in each round (their order alternating) so that noise from other work on the machine
# hits both, and prints medians with min and max, the ratios and the goals. See Benchmarks/README.md.
#
# Environment: ROUNDS (default 5), KEYS (default 1000000), GUAVA_KEYED (path to Keyed.java),
# STRICT=1 to exit 1 when a goal is missed, BENCH_ROWS (a file: each row is also appended to it as a JSON
# line, Benchmarks/report/row.py, for `make bench`).
#
# Besides Keyed.java itself, guava/KeyedSplit.java (Keyed.java with each thread on its own slice of the
# keys) gives the like-for-like Guava figure for "2 threads on distinct keys", and its 2-thread scaling
# shows whether the machine itself could scale during the run; guava/KeyedShuffled.java (Keyed.java visiting
# the keys in a fixed random order) is the control for the "random order" row.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${ROUNDS:-5}"
keys="${KEYS:-1000000}"
work="$here/.build/compare-core"
mkdir -p "$work"
log="$work/runs-$(date +%Y%m%d-%H%M%S).log"

# --- Guava: the peer as published, compiled as its README says -------------------------------------
keyed="${GUAVA_KEYED:-}"
if [[ -z "$keyed" ]]; then
    for candidate in "$here/../../shared/peers/guava/Keyed.java" "$here/../shared/peers/guava/Keyed.java"; do
        if [[ -f "$candidate" ]]; then keyed="$candidate"; break; fi
    done
fi
if [[ -n "$keyed" && -f "$keyed" ]]; then keyed="$(cd "$(dirname "$keyed")" && pwd)/$(basename "$keyed")"; fi
if [[ -z "$keyed" || ! -f "$keyed" ]]; then
    echo "compare-core: Keyed.java not found; expected shared/peers/guava/Keyed.java beside the repository," >&2
    echo "              or set GUAVA_KEYED=/path/to/Keyed.java" >&2
    exit 2
fi
guava_jar=/usr/share/java/guava.jar
if ! command -v javac >/dev/null 2>&1 || [[ ! -f "$guava_jar" ]]; then
    echo "== installing libguava-java default-jdk-headless (javac or $guava_jar missing)"
    sudo_cmd=""
    if [[ "$(id -u)" != 0 ]]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get install -y libguava-java default-jdk-headless \
        || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y libguava-java default-jdk-headless; }
fi
echo "== compiling $keyed, $here/guava/KeyedSplit.java and $here/guava/KeyedShuffled.java"
mkdir -p "$work/guava"
javac -cp "$guava_jar" -d "$work/guava" "$keyed" "$here/guava/KeyedSplit.java" "$here/guava/KeyedShuffled.java"

# --- Tollgate: core-compare in release ---------------------------------------------------------------
echo "== building core-compare (swift build -c release, in $here)"
(cd "$here" && swift build -c release --product core-compare)
bin="$(cd "$here" && swift build -c release --show-bin-path)/core-compare"

tollgate() { "$bin" "$@"; }
guava() { java -Xmx4g -cp "$guava_jar:$work/guava" Keyed "$@"; }
guava_split() { java -Xmx4g -cp "$guava_jar:$work/guava" KeyedSplit "$@"; }
guava_shuffled() { java -Xmx4g -cp "$guava_jar:$work/guava" KeyedShuffled "$@"; }

# Each case: an id | Tollgate's arguments | the Guava program and its arguments ("-": none).
cases=(
    "hot1|1 1 one|guava 1 1"
    "spread1|1 $keys one|guava 1 $keys"
    "spread1v|1 $keys one byvalue|-"
    "shuffled1|1 $keys one shuffled|guava_shuffled 1 $keys"
    "hot2|2 1 one|guava 2 1"
    "split2|2 $keys one split|guava_split 2 $keys"
    "split2v|2 $keys one split byvalue|-"
    "shared2|2 $keys one shared|guava 2 $keys"
    "hot1three|1 1 three|-"
    "spread1three|1 $keys three|-"
)

# One run: prints "ns mops" from a result line in Keyed.java's format.
measure() {
    local line
    line="$("$@")"
    echo "$line" >>"$log"
    echo "$line" | sed -n 's/.*ns\/op(per thread)=\([0-9.]*\) total Mops\/s=\([0-9.]*\).*/\1 \2/p'
}

declare -A ns mops targs_of gargs_of
echo "== $rounds rounds, 10,000,000 checks per thread per run; raw lines in $log"
for ((round = 1; round <= rounds; round++)); do
    echo "-- round $round/$rounds"
    for spec in "${cases[@]}"; do
        IFS='|' read -r id targs gargs <<<"$spec"
        targs_of[$id]=$targs; gargs_of[$id]=$gargs
        runs=(tollgate)
        [[ "$gargs" != "-" ]] && runs+=(guava)
        # Alternate who goes first, so neither always runs on a machine warmed (or disturbed) by the other.
        if ((round % 2 == 0 && ${#runs[@]} == 2)); then runs=(guava tollgate); fi
        for who in "${runs[@]}"; do
            # shellcheck disable=SC2086 # the argument lists are meant to split
            if [[ "$who" == tollgate ]]; then
                read -r n m <<<"$(measure tollgate $targs)"
            else
                read -r n m <<<"$(measure $gargs)"
            fi
            if [[ -z "${n:-}" ]]; then
                echo "compare-core: no result from $who $([[ $who == tollgate ]] && echo "$targs" || echo "$gargs")" >&2
                exit 1
            fi
            ns[$id.$who]+="$n "
            mops[$id.$who]+="$m "
            printf '   %-13s %-9s %8s ns/op  %6s Mops/s\n' "$id" "$who" "$n" "$m"
        done
    done
done

# --- Table -------------------------------------------------------------------------------------------
# median, min, max of a list of numbers
stats() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f %.1f %.1f", m, v[1], v[NR] }'; }
median() { stats "$1" | awk '{ print $1 }'; }
cell() { stats "$1" | awk '{ printf "%7.1f [%6.1f-%6.1f]", $1, $2, $3 }'; }

missed=0
verdict() { # value op goal: sets $status to "met" or "MISSED" (and $missed), in this shell
    if awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { exit !((op == "<=" && v <= g) || (op == ">=" && v >= g)) }'; then
        status="met"
    else
        status="MISSED"
        missed=1
    fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# total throughput with 2 threads over that with 1, from ns/op per thread: 2 * ns(1 thread) / ns(2 threads)
scaling() { awk -v one="$1" -v two="$2" 'BEGIN { printf "%.2f", 2 * one / two }'; }
commas() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
keys_label="$(commas "$keys")"

echo
echo "Tollgate MemoryStore.checkNow vs Guava RateLimiter in a ConcurrentHashMap: $(nproc) cores, $rounds rounds"
echo "ns/op per thread (10,000,000 checks per thread): median [min-max]; ratio = Tollgate / Guava (medians)"
echo
printf '%-42s %-25s %-25s %7s   %s\n' "case (one token bucket)" "Tollgate" "Guava" "ratio" "goal"
row() { # tollgate-id guava-id has-goal label
    local t g r goal
    t="$(median "${ns[$1.tollgate]}")"
    g="$(median "${ns[$2.guava]}")"
    r="$(ratio "$t" "$g")"
    if [[ "$3" == goal ]]; then
        verdict "$r" "<=" 1.0
        goal="<= 1.00x  $status"
    else
        goal="(no goal)"
    fi
    printf '%-42s %-25s %-25s %6sx   %s\n' "$4" "$(cell "${ns[$1.tollgate]}")" "$(cell "${ns[$2.guava]}")" "$r" "$goal"
    bench_row "$1" "$4" "$t" "${ns[$1.tollgate]}" --peer "Guava RateLimiter ($(awk '{ print $1 }' <<<"${gargs_of[$2]}"))" \
        --peer-metric "ns_per_check=$g:ns/check/thread" --peer-command "java -Xmx4g -cp guava.jar:. ${gargs_of[$2]}"
}
bench_row() { # id label median all-values [peer arguments...]: the row as a JSON line in $BENCH_ROWS
    [[ -n "${BENCH_ROWS:-}" ]] || return 0
    local id="$1" label="$2" median="$3" all="$4"
    shift 4
    python3 "$here/report/row.py" --table core --row "$label" --set "id=$id" --set "rounds=$rounds" \
        --json "all=[$(echo $all | tr ' ' ',')]" --command "core-compare ${targs_of[$id]}" \
        --metric "ns_per_check=$median:ns/check/thread" "$@"
}
row hot1 hot1 goal "1 thread, hot key"
row spread1 spread1 goal "1 thread, $keys_label keys"
row spread1v spread1 - "1 thread, $keys_label keys, by value (4)"
row shuffled1 shuffled1 - "1 thread, $keys_label keys, random order (3)"
row hot2 hot2 - "2 threads, same hot key (contention)"
row split2 split2 - "2 threads, $keys_label keys, split (1)"
row split2v split2 - "2 threads, $keys_label keys, split, by value (4)"
row shared2 shared2 - "2 threads, $keys_label keys, shared (2)"
echo
echo "(1) each thread on its own half of the keys (Guava: guava/KeyedSplit.java)"
echo "(2) both threads sweep all the keys, in step, as Keyed.java's threads do (Guava: Keyed.java)"
echo "(3) a control: the keys visited in a fixed random order, not the order they were created in"
echo "    (Guava: guava/KeyedShuffled.java), so that neither side is helped by reading memory in allocation order"
echo "(4) Tollgate through the plain checkNow(plan, partition:), which searches the store's index on every check;"
echo "    every other Tollgate row passes the kept partition inout, checkNow(plan, partition: &p), which remembers"
echo "    where its counters are"
echo

printf '%-50s %7s   %-8s %-7s %s\n' "Tollgate alone" "ratio" "goal" "" "from medians"
three_hot="$(ratio "$(median "${ns[hot1three.tollgate]}")" "$(median "${ns[hot1.tollgate]}")")"
verdict "$three_hot" "<=" 3
printf '%-50s %6sx   %-8s %-7s %s vs %s ns/op\n' "three-limit plan / one bucket, hot key" "$three_hot" "<= 3x" "$status" \
    "$(median "${ns[hot1three.tollgate]}")" "$(median "${ns[hot1.tollgate]}")"
bench_row hot1three "three-limit plan, 1 thread, hot key" "$(median "${ns[hot1three.tollgate]}")" "${ns[hot1three.tollgate]}" \
    --peer "Tollgate, one token bucket" --peer-metric "ns_per_check=$(median "${ns[hot1.tollgate]}"):ns/check/thread"
three_spread="$(ratio "$(median "${ns[spread1three.tollgate]}")" "$(median "${ns[spread1.tollgate]}")")"
verdict "$three_spread" "<=" 3
printf '%-50s %6sx   %-8s %-7s %s vs %s ns/op\n' "three-limit plan / one bucket, $keys_label keys" "$three_spread" "<= 3x" "$status" \
    "$(median "${ns[spread1three.tollgate]}")" "$(median "${ns[spread1.tollgate]}")"
bench_row spread1three "three-limit plan, 1 thread, $keys_label keys" "$(median "${ns[spread1three.tollgate]}")" \
    "${ns[spread1three.tollgate]}" --peer "Tollgate, one token bucket" \
    --peer-metric "ns_per_check=$(median "${ns[spread1.tollgate]}"):ns/check/thread"
tollgate_scaling="$(scaling "$(median "${ns[spread1.tollgate]}")" "$(median "${ns[split2.tollgate]}")")"
guava_scaling="$(scaling "$(median "${ns[spread1.guava]}")" "$(median "${ns[split2.guava]}")")"
verdict "$tollgate_scaling" ">=" 1.8
printf '%-50s %6sx   %-8s %-7s 2 x %s / %s ns/op\n' "2 threads / 1 thread throughput, $keys_label keys" \
    "$tollgate_scaling" ">= 1.8x" "$status" "$(median "${ns[spread1.tollgate]}")" "$(median "${ns[split2.tollgate]}")"
printf '%-50s %6sx   %-8s %-7s 2 x %s / %s ns/op\n' "  the same by value (4)" \
    "$(scaling "$(median "${ns[spread1v.tollgate]}")" "$(median "${ns[split2v.tollgate]}")")" "" "" \
    "$(median "${ns[spread1v.tollgate]}")" "$(median "${ns[split2v.tollgate]}")"
printf '%-50s %6sx   %-8s %-7s 2 x %s / %s ns/op\n' "  the same for Guava (control: can the machine scale?)" \
    "$guava_scaling" "" "" "$(median "${ns[spread1.guava]}")" "$(median "${ns[split2.guava]}")"
echo
echo "raw result lines: $log"

if [[ "${STRICT:-0}" == 1 && "$missed" == 1 ]]; then exit 1; fi
