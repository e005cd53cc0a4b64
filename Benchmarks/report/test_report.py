"""Tests of the benchmark report: the generator on the checked-in example run (Benchmarks/results/example),
the row writer, the sizing sheet, the failure-mode analysis and bench-compare.

    make bench-report-test        (matplotlib in Benchmarks/.venv)
"""
import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "results", "example")
sys.path.insert(0, HERE)
import compare  # noqa: E402
import failure  # noqa: E402
import report  # noqa: E402


def png_problems(path):
    """What is wrong with a PNG file (empty list: nothing): signature, chunk CRCs, IHDR first, IEND last,
    image data that inflates to the size IHDR announces."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return ["no PNG signature"]
    problems, chunks, offset, idat = [], [], 8, b""
    while offset < len(data):
        if offset + 8 > len(data):
            return problems + ["truncated chunk header"]
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        if zlib.crc32(kind + body) != crc:
            problems.append(f"bad CRC in {kind!r}")
        chunks.append((kind, body))
        if kind == b"IDAT":
            idat += body
        offset += 12 + length
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        return problems + ["IHDR not first or IEND not last"]
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    expected = height * (1 + width * channels * depth // 8)
    if width == 0 or height == 0 or len(zlib.decompress(idat)) != expected:
        problems.append("image data does not match the header")
    return problems


class ExampleReportTests(unittest.TestCase):
    """The generator renders the checked-in example: every row in the tables, every plot a valid PNG."""

    @classmethod
    def setUpClass(cls):
        cls.out = tempfile.mkdtemp(prefix="tollgate-report-test.")
        with open(os.path.join(EXAMPLE, "results.json")) as handle:
            cls.results = json.load(handle)
        with contextlib.redirect_stdout(io.StringIO()):
            report.main([EXAMPLE, "--out", cls.out])
        with open(os.path.join(cls.out, "report.md")) as handle:
            cls.markdown = handle.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out)

    def test_example_covers_every_table_and_plot(self):
        tables = {row["table"] for row in self.results["rows"]}
        self.assertLessEqual({"core", "redis-cpu", "redis-client", "proxy", "openloop", "failure"}, tables)

    def test_every_row_is_listed_in_its_table(self):
        for table in {row["table"] for row in self.results["rows"]}:
            rows = [row for row in self.results["rows"] if row["table"] == table]
            title = report.TABLES.get(table, (table,))[0]
            section = self.markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
            body = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| #")]
            self.assertEqual(len(body), len(rows), f"table {table}: {len(rows)} rows, {len(body)} listed")
            for index, row in enumerate(rows, 1):
                self.assertIn(f"| {index} | {report.cell(row['row'])} |", section)
                self.assertIn(row["command"], section)

    def test_ratios_are_the_row_over_its_peer(self):
        row = next(r for r in self.results["rows"] if r["table"] == "proxy" and r.get("peer"))
        expected = row["metrics"]["cpu_us_per_request"]["value"] / row["peer"]["metrics"]["cpu_us_per_request"]["value"]
        self.assertIn(f"{expected:.2f}x", self.markdown.split("## Sidecar against nginx", 1)[1])

    def test_every_plot_is_a_valid_png_and_referenced(self):
        for name, _, title, _ in report.PLOTS:
            path = os.path.join(self.out, "plots", name)
            self.assertTrue(os.path.exists(path), f"{name} was not drawn")
            self.assertEqual(png_problems(path), [], name)
            self.assertIn(f"![{title}](plots/{name})", self.markdown)

    def test_machine_and_sizing_sheet(self):
        self.assertIn(self.results["machine"]["cpu_model"], self.markdown)
        self.assertIn("## Sizing sheet", self.markdown)
        for rate in report.SIZING_RATES:
            self.assertIn(f"| {rate:,} |", self.markdown)


class SizingTests(unittest.TestCase):
    def rows(self, sidecar, redis_under_sidecar, redis_spread, nginx):
        def proxy(id, cpu, redis=None):
            metrics = {"cpu_us_per_request": {"value": cpu, "unit": "us"}}
            if redis is not None:
                metrics["redis_cpu_us_per_request"] = {"value": redis, "unit": "us"}
            return {"table": "proxy", "row": id, "command": "-", "metrics": metrics, "attributes": {"id": id}}
        return [proxy("redis", sidecar, redis_under_sidecar), proxy("nginx", nginx),
                {"table": "redis-cpu", "row": "three", "command": "-", "attributes": {"id": "three"},
                 "metrics": {"redis_cpu_us_per_check": {"value": redis_spread, "unit": "us"}}}]

    def test_cores_follow_the_headroom_rule(self):
        sheet = report.sizing(self.rows(sidecar=50, redis_under_sidecar=2, redis_spread=7.5, nginx=20))
        by_rate = {r["rate"]: r for r in sheet["rows"]}
        # 50 us x 10,000/s = 0.5 core busy, at most 50 % busy: 1 core; 50,000/s: 5; 200,000/s: 20.
        self.assertEqual([by_rate[r]["sidecar_cores"] for r in (10_000, 50_000, 200_000)], [1, 5, 20])
        # Redis: the larger figure (7.5 us): 0.075 -> 1 primary, 0.375 / 0.5 -> 1, 1.5 / 0.5 -> 3.
        self.assertEqual([by_rate[r]["redis_primaries"] for r in (10_000, 50_000, 200_000)], [1, 1, 3])
        self.assertEqual([by_rate[r]["nginx_cores"] for r in (10_000, 50_000, 200_000)], [1, 2, 8])
        self.assertIsNone(by_rate[10_000]["sidecar_memory_cores"])

    def test_missing_rows_leave_blanks(self):
        sheet = report.sizing([])
        self.assertTrue(all(r["sidecar_cores"] is None and r["redis_primaries"] is None for r in sheet["rows"]))


class RowWriterTests(unittest.TestCase):
    def run_row(self, *arguments):
        with tempfile.TemporaryDirectory() as folder:
            target = os.path.join(folder, "rows.jsonl")
            done = subprocess.run([sys.executable, os.path.join(HERE, "row.py"), *arguments],
                                  env=dict(os.environ, BENCH_ROWS=target), capture_output=True, text=True)
            rows = []
            if os.path.exists(target):
                with open(target) as handle:
                    rows = [json.loads(line) for line in handle]
        return done, rows

    def test_a_row_is_appended_with_metrics_peer_and_attributes(self):
        done, rows = self.run_row("--table", "proxy", "--row", "Tollgate, Redis store", "--command", "wrk -t2 url",
                                  "--metric", "requests_per_s=41234.5:requests/s", "--metric", "p99_ms=3.1:ms",
                                  "--peer", "nginx", "--peer-metric", "requests_per_s=50000:requests/s",
                                  "--set", "connections=64", "--json", "percentiles=[[50, 1.5]]")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(rows, [{"table": "proxy", "row": "Tollgate, Redis store", "command": "wrk -t2 url",
                                 "metrics": {"requests_per_s": {"value": 41234.5, "unit": "requests/s"},
                                             "p99_ms": {"value": 3.1, "unit": "ms"}},
                                 "peer": {"name": "nginx", "metrics": {"requests_per_s": {"value": 50000, "unit": "requests/s"}}},
                                 "attributes": {"connections": 64, "percentiles": [[50, 1.5]]}}])
        self.assertIn("proxy: Tollgate, Redis store", done.stderr)

    def test_a_bad_metric_is_refused_with_a_reason(self):
        done, rows = self.run_row("--table", "t", "--row", "r", "--command", "c", "--metric", "p99_ms=fast:ms")
        self.assertEqual(done.returncode, 2)
        self.assertIn("'fast' is not a number", done.stderr)
        self.assertEqual(rows, [])


class FailureAnalysisTests(unittest.TestCase):
    def test_phases_shares_and_recovery(self):
        summary = {"start_epoch": 1000.0, "seconds": 10.0}
        requests = []
        for index in range(1000):  # 100 requests/s for 10 s
            due = index / 100
            status, latency = 200, 1.0
            if 3 <= due < 5:
                status = 503  # the fault, from 3 s to 5 s
            elif 5 <= due < 5.5:
                status, latency = 200, 300.0  # slow answers for half a second after it
            requests.append((due, latency, status))
        result, timeline, fault, threshold = failure.analyse(summary, requests, 1003.0, 1005.0)
        self.assertEqual(fault, [3.0, 5.0])
        self.assertEqual(result["share_503_during"], 100.0)
        self.assertEqual(result["share_503_before"], 0.0)
        self.assertEqual(result["share_503_after"], 0.0)
        self.assertEqual(result["ok_per_s_before"], 100.0)
        self.assertEqual(result["ok_per_s_during"], 0.0)
        self.assertEqual(threshold, 20.0)
        self.assertAlmostEqual(result["recovery_s"], 0.49, places=3)
        self.assertTrue(result["recovered"])
        self.assertEqual(timeline[14], [3.5, 1.0, 1.0, 100])


class CompareTests(unittest.TestCase):
    def test_two_runs_side_by_side(self):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(EXAMPLE, "results.json")) as handle:
                results = json.load(handle)
            for row in results["rows"]:
                for metric in row["metrics"].values():
                    metric["value"] *= 2
            with open(os.path.join(folder, "results.json"), "w") as handle:
                json.dump(results, handle)
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                self.assertEqual(compare.main([EXAMPLE, folder]), 0)
        text = output.getvalue()
        # The proxy's own CPU per request: doubled in B, and so is its ratio to nginx (the peer's figures
        # inside each row are left as they were).
        lines = [line for line in text.splitlines() if re.search(r"\s(cpu_us_per_request|requests_per_s) \(", line)]
        self.assertEqual(len(lines), 8, text)
        self.assertTrue(all(" 2.00x " in line for line in lines), lines)
        memory = next(line for line in lines if "Tollgate, in-memory store" in line and "cpu_us_per_request" in line)
        row = next(r for r in results["rows"] if r["table"] == "proxy" and r["row"] == "Tollgate, in-memory store")
        ratio = row["metrics"]["cpu_us_per_request"]["value"] / 2 / row["peer"]["metrics"]["cpu_us_per_request"]["value"]
        self.assertTrue(memory.rstrip().endswith(f"{ratio:.2f}x {2 * ratio:6.2f}x"), (memory, ratio))
        self.assertNotIn("only in", text)

    def test_an_unreadable_folder_is_an_error_that_names_it(self):
        with self.assertRaises(SystemExit) as raised:
            compare.main([EXAMPLE, "/nonexistent/run"])
        self.assertIn("/nonexistent/run/results.json", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
