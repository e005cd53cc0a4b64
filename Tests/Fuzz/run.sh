#!/usr/bin/env bash
# Builds the HTTP/1.1 fuzz targets with libFuzzer and runs each for a while over its seed corpus.
#
#   bash Tests/Fuzz/run.sh [seconds per target, default 60]
#
# The parsers import nothing, so each target is compiled from their sources alone with `swiftc
# -sanitize=fuzzer` (no package build). Inputs found are added to a scratch copy of the corpus in
# .build-fuzz/; a crash leaves its input there (crash-*) and fails the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
# A crash is reported by libFuzzer; Swift's own backtracer would wait on it.
export SWIFT_BACKTRACE=enable=no
out=.build-fuzz
mkdir -p "$out"
sources=(
    Sources/TollgateSidecar/HTTP1/HTTP1Error.swift
    Sources/TollgateSidecar/HTTP1/HTTP1Syntax.swift
    Sources/TollgateSidecar/HTTP1/FramingFields.swift
    Sources/TollgateSidecar/HTTP1/RequestHeadParser.swift
    Sources/TollgateSidecar/HTTP1/ResponseHeadScanner.swift
    Sources/TollgateSidecar/HTTP1/BodyFramer.swift
    Tests/Fuzz/FuzzSupport.swift
)
for target in request-head response-head; do
    case "$target" in
        request-head) main=Tests/Fuzz/RequestHeadFuzz.swift ;;
        response-head) main=Tests/Fuzz/ResponseHeadFuzz.swift ;;
    esac
    # gold warns about every AddressSanitizer helper symbol; those lines say nothing.
    swiftc -O -swift-version 6 -parse-as-library -sanitize=fuzzer,address -o "$out/$target" "${sources[@]}" "$main" 2>&1 \
        | { grep -v "Cannot export local symbol '__asan" || true; }
    mkdir -p "$out/corpus-$target"
    cp Tests/Fuzz/corpus/"$target"/* "$out/corpus-$target/"
    (cd "$out" && "./$target" -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 "corpus-$target" 2>&1 | tail -n 12)
    echo "fuzz $target: ok (${seconds} s)"
done
