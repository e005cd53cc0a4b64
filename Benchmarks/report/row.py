#!/usr/bin/env python3
"""Appends one row of a benchmark table, as a JSON line, to the file named by $BENCH_ROWS.

A row: {"table", "row", "command", "metrics": {name: {"value", "unit"}}, "peer": {"name", "metrics",
"command"}, "attributes": {...}}; report.py adds "ratios" (the row's value over its peer's, per metric).

The comparison scripts call it (through their `bench_row` shell function) after printing each table row,
so that `make bench` keeps every row as data; with no $BENCH_ROWS it does nothing. It also prints a
progress line on the terminal: the stage, the row, the time spent and about how long is left.

    row.py --table proxy --row "Tollgate, Redis store" --command "wrk ..." \
           --metric requests_per_s=41234:requests/s --metric p99_ms=3.1:ms \
           --peer "nginx limit_req" --peer-metric requests_per_s=52000:requests/s \
           --set callers=64 --json percentiles=@curve.json
"""
import argparse
import json
import os
import sys
import time


def number(text):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def metric(text):
    """name=value:unit -> (name, {"value": number, "unit": unit})"""
    if "=" not in text or ":" not in text.split("=", 1)[1]:
        raise argparse.ArgumentTypeError(f"expected name=value:unit, got {text!r}")
    name, rest = text.split("=", 1)
    value, unit = rest.split(":", 1)
    parsed = number(value)
    if not isinstance(parsed, (int, float)):
        raise argparse.ArgumentTypeError(f"metric {name}: {value!r} is not a number")
    return name, {"value": parsed, "unit": unit}


def attribute(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key, number(value)


def json_attribute(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=JSON or key=@file, got {text!r}")
    key, value = text.split("=", 1)
    try:
        if value.startswith("@"):
            with open(value[1:]) as handle:
                return key, json.load(handle)
        return key, json.loads(value)
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{key}: {error}")


def progress(row):
    started = float(os.environ.get("BENCH_STARTED", "0") or 0)
    end = float(os.environ.get("BENCH_ESTIMATED_END", "0") or 0)
    now = time.time()
    parts = [os.environ.get("BENCH_STAGE", "")]
    if started:
        parts.append(f"{int(now - started) // 60}m{int(now - started) % 60:02d}s in")
    if end:
        left = int(end - now)
        if left >= 0:
            parts.append(f"about {left // 60}m{left % 60:02d}s left")
        else:
            parts.append(f"{-left // 60}m{-left % 60:02d}s over the estimate")
    print(f"[bench {' · '.join(p for p in parts if p)}] {row['table']}: {row['row']}", file=sys.stderr)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--row", required=True)
    parser.add_argument("--command", required=True, help="the command that measured the row")
    parser.add_argument("--metric", type=metric, action="append", default=[])
    parser.add_argument("--peer")
    parser.add_argument("--peer-metric", type=metric, action="append", default=[])
    parser.add_argument("--peer-command")
    parser.add_argument("--set", type=attribute, action="append", default=[])
    parser.add_argument("--json", type=json_attribute, action="append", default=[])
    args = parser.parse_args(argv)
    if not args.metric:
        parser.error("a row needs at least one --metric")
    if args.peer_metric and not args.peer:
        parser.error("--peer-metric needs --peer")
    row = {"table": args.table, "row": args.row, "command": args.command, "metrics": dict(args.metric)}
    if args.peer:
        row["peer"] = {"name": args.peer, "metrics": dict(args.peer_metric)}
        if args.peer_command:
            row["peer"]["command"] = args.peer_command
    attributes = dict(args.set)
    attributes.update(dict(args.json))
    if attributes:
        row["attributes"] = attributes
    append(row)
    return 0


def append(row):
    """Appends `row` to $BENCH_ROWS and prints the progress line; does nothing without $BENCH_ROWS."""
    target = os.environ.get("BENCH_ROWS")
    if not target:
        return
    with open(target, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    progress(row)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
