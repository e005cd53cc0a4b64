"""Tests of tollgate-openloop (Benchmarks/Sources/tollgate-openloop) against a real HTTP/1.1 server in this
process: the request count follows the rate, answers are counted by status, and a stall of the server shows
in the latencies of every request that fell due during it (the open-loop property), not only in the one
that was waiting.

The binary is the release build of the Benchmarks package (`cd Benchmarks && swift build -c release
--product tollgate-openloop`, which `make bench` does), or $OPENLOOP_BIN. Without it the tests are skipped,
saying so: CI does not build the Benchmarks package (a release build of SwiftNIO does not fit its budget).
"""
import csv
import http.server
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = os.environ.get("OPENLOOP_BIN") or os.path.join(HERE, "..", ".build", "release", "tollgate-openloop")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.stall_at = None  # monotonic time from which the next request is answered 0.5 s late
        self.stalled = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go out in separate writes: without this, Nagle's algorithm holds the body until
    # the client's delayed ACK (40 ms), and the server could not keep up with the rate.
    disable_nagle_algorithm = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        if server.stall_at is not None and time.monotonic() >= server.stall_at and not server.stalled.is_set():
            server.stalled.set()
            time.sleep(0.5)
        status = 503 if self.path == "/unavailable" else 200
        body = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments):
        pass


@unittest.skipUnless(os.path.exists(BINARY), f"tollgate-openloop is not built ({BINARY}): "
                     "cd Benchmarks && swift build -c release --product tollgate-openloop")
class OpenLoopTests(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.folder = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        self.folder.cleanup()

    def load(self, path, rate, seconds, connections=4):
        histogram = os.path.join(self.folder.name, "latency.hgrm")
        requests = os.path.join(self.folder.name, "requests.csv")
        done = subprocess.run([BINARY, "--url", f"http://127.0.0.1:{self.server.server_port}{path}", "--rate", str(rate),
                               "--seconds", str(seconds), "--warmup", "0.2", "--connections", str(connections),
                               "--method", "POST", "--body", "{}", "--header", "Content-Type: application/json",
                               "--histogram", histogram, "--requests", requests],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(requests) as handle:
            rows = [(int(r["due_us"]), int(r["latency_us"]), int(r["status"])) for r in csv.DictReader(handle)]
        with open(histogram) as handle:
            return json.loads(done.stdout), rows, handle.read()

    def test_the_rate_is_kept_and_answers_are_counted(self):
        summary, rows, histogram = self.load("/send", rate=200, seconds=2)
        self.assertEqual(summary["requests"], 400)
        self.assertEqual(summary["outcomes"]["byStatus"], {"200": 400})
        self.assertEqual(len(rows), 400)
        # Due times are evenly spread: 5 ms apart over all connections.
        dues = sorted(r[0] for r in rows)
        self.assertEqual(dues[0] < 5_000 and dues[-1] >= 1_990_000, True, (dues[0], dues[-1]))
        self.assertIn("Total count    =          400]", histogram)
        self.assertLessEqual(summary["p50_ms"], summary["p99_ms"])
        self.assertEqual(summary["percentiles"][-1][0], 100.0)

    def test_statuses_other_than_2xx_are_counted_by_code(self):
        summary, rows, _ = self.load("/unavailable", rate=100, seconds=1)
        self.assertEqual(summary["outcomes"]["byStatus"], {"503": 100})
        self.assertTrue(all(r[2] == 503 for r in rows))

    def test_a_stall_delays_every_request_due_during_it(self):
        self.server.stall_at = time.monotonic() + 1.2
        summary, rows, _ = self.load("/send", rate=200, seconds=2.5, connections=1)
        self.assertTrue(self.server.stalled.is_set())
        # One connection, a request due every 5 ms, the server silent for 500 ms: the ~100 requests due in
        # that time wait for it, each from its own due time. A closed-loop client would count one slow request.
        slow = [r for r in rows if r[1] > 100_000]
        self.assertGreaterEqual(len(slow), 50, f"{len(slow)} requests over 100 ms")
        self.assertGreaterEqual(summary["max_ms"], 450)
        self.assertEqual(summary["requests"], 500)

    def test_a_bad_argument_is_refused_with_a_reason(self):
        done = subprocess.run([BINARY, "--url", "https://example.invalid/", "--rate", "10"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 2)
        self.assertIn("--url must start with http://", done.stderr)
        done = subprocess.run([BINARY, "--url", "http://127.0.0.1:1/", "--rate", "none"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 2)
        self.assertIn("--rate expects a number", done.stderr)


if __name__ == "__main__":
    unittest.main()
