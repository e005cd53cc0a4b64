#!/usr/bin/env bash
# The sidecar's HTTP/1.1 parsers alone: nanoseconds to parse a typical request head (the message
# API's send, 208 bytes) and to scan a typical response head (108 bytes), each from a fresh parser.
#
#   bash Benchmarks/http1-parse.sh [rounds, default 2000000]      (BENCH_ROWS: see proxy-compare.sh)
#
# The parsers import nothing, so they are compiled from their sources with `swiftc -O -wmo` (as a
# release build optimizes a module), with no package build. The machine's other load shows in the
# numbers: compare runs made one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2000000}"
out=.build-http1-parse
mkdir -p "$out"
cat > "$out/main.swift" <<'EOF'
let request = Array(("POST /api/v1/messages/send HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: wrk\r\n"
    + "Authorization: Bearer wz_live_0123456789abcdef0123456789abcdef\r\nContent-Type: application/json\r\n"
    + "Accept: */*\r\nContent-Length: 42\r\n\r\n").utf8)
let response = Array(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Mon, 07 Dec 2026 15:00:00 GMT\r\n"
    + "Content-Length: 15\r\n\r\n").utf8)
let rounds = Int(CommandLine.arguments[1])!
// Summed and printed, so that the optimizer cannot drop the work.
var sink = 0
let clock = ContinuousClock()
let requestTime = clock.measure {
    request.withUnsafeBytes { bytes in
        for _ in 0..<rounds {
            var parser = RequestHeadParser()
            if case .head(let head) = parser.parse(bytes) { sink &+= head.length }
        }
    }
}
let responseTime = clock.measure {
    response.withUnsafeBytes { bytes in
        for _ in 0..<rounds {
            var scanner = ResponseHeadScanner(requestMethod: .post)
            if case .head(let head) = scanner.scan(bytes) { sink &+= head.length }
        }
    }
}
func nanoseconds(_ duration: Duration) -> Int {
    Int((Double(duration.components.seconds) * 1e18 + Double(duration.components.attoseconds)) / 1e9 / Double(rounds))
}
precondition(sink == rounds * (request.count + response.count))
print("request head, \(request.count) bytes: \(nanoseconds(requestTime)) ns")
print("response head, \(response.count) bytes: \(nanoseconds(responseTime)) ns")
EOF
swiftc -O -wmo -swift-version 6 -o "$out/http1-parse" \
    Sources/TollgateSidecar/HTTP1/HTTP1Error.swift \
    Sources/TollgateSidecar/HTTP1/HTTP1Syntax.swift \
    Sources/TollgateSidecar/HTTP1/FramingFields.swift \
    Sources/TollgateSidecar/HTTP1/RequestHeadParser.swift \
    Sources/TollgateSidecar/HTTP1/ResponseHeadScanner.swift \
    Sources/TollgateSidecar/HTTP1/BodyFramer.swift \
    "$out/main.swift"
"$out/http1-parse" "$rounds" | tee "$out/result.txt"
# With BENCH_ROWS set (make bench), each line is also kept as a JSON row (Benchmarks/report/row.py).
if [ -n "${BENCH_ROWS:-}" ]; then
  while IFS=: read -r what figure; do
    python3 Benchmarks/report/row.py --table http1 --row "$what" --command "bash Benchmarks/http1-parse.sh $rounds" \
      --metric "ns_per_head=${figure//[^0-9]/}:ns"
  done <"$out/result.txt"
fi
