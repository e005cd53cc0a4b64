#!/usr/bin/env python3
"""Reads one failure-mode run (failure-modes.sh) and prints its row; appends it to $BENCH_ROWS if set.

    failure.py SUMMARY.json REQUESTS.csv FAULT --label TEXT --policy P --fault KIND --command TEXT

SUMMARY is tollgate-openloop's output, REQUESTS its --requests file (due µs, latency µs, status per
request), FAULT one line "start end" in epoch seconds. Phases are by due time: before the fault, during it,
after it. Recovery time: from the end of the fault to the last request due after it that was answered with
anything but a 2xx, not at all, or slower than max(5 x the p99 before the fault, 20 ms).
"""
import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import row as rowmodule  # noqa: E402


def percentile(values, p):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def analyse(summary, requests, fault_start, fault_end):
    """-> dict of metrics and a timeline; times in seconds from the start of the measured period."""
    origin = summary["start_epoch"]
    start, end = fault_start - origin, fault_end - origin
    total = summary["seconds"]
    phases = {"before": (0.0, start), "during": (start, end), "after": (end, total)}
    result = {}
    for name, (low, high) in phases.items():
        inside = [r for r in requests if low <= r[0] < high]
        span = max(high - low, 1e-9)
        ok = sum(1 for r in inside if 200 <= r[2] < 300)
        unavailable = sum(1 for r in inside if r[2] == 503)
        result[f"ok_per_s_{name}"] = round(ok / span, 1)
        result[f"p99_ms_{name}"] = round(percentile([r[1] for r in inside], 99), 3)
        result[f"share_503_{name}"] = round(100 * unavailable / len(inside), 2) if inside else 0.0
        result[f"unanswered_{name}"] = sum(1 for r in inside if r[2] == 0)
    threshold = max(5 * result["p99_ms_before"], 20.0)
    bad = [r[0] for r in requests if r[0] >= end and not (200 <= r[2] < 300 and r[1] <= threshold)]
    result["recovery_s"] = round(max(bad) - end, 3) if bad else 0.0
    result["recovered"] = not bad or max(bad) < total - 1.0
    timeline = []
    step = 0.25
    slices = int(total / step) + 1
    for index in range(slices):
        inside = [r for r in requests if index * step <= r[0] < (index + 1) * step]
        if inside:
            share = sum(1 for r in inside if r[2] == 503) / len(inside)
            timeline.append([round(index * step, 2), round(share, 3), round(percentile([r[1] for r in inside], 99), 3),
                             round(len(inside) / step)])
    return result, timeline, [round(start, 3), round(end, 3)], threshold


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("summary")
    parser.add_argument("requests")
    parser.add_argument("fault")
    parser.add_argument("--label", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--fault", dest="kind", required=True)
    parser.add_argument("--command", required=True)
    args = parser.parse_args(argv)
    with open(args.summary) as handle:
        summary = json.load(handle)
    requests = []
    with open(args.requests) as handle:
        for line in csv.DictReader(handle):
            requests.append((int(line["due_us"]) / 1e6, int(line["latency_us"]) / 1000, int(line["status"])))
    with open(args.fault) as handle:
        fault_start, fault_end = map(float, handle.read().split())
    result, timeline, fault, threshold = analyse(summary, requests, fault_start, fault_end)
    cells = []
    for phase in ("before", "during", "after"):
        cells.append(f"{result[f'ok_per_s_{phase}']:8.0f} {result[f'p99_ms_{phase}']:8.1f}ms {result[f'share_503_{phase}']:6.1f}%")
    recovery = f"{result['recovery_s']:.2f} s" + ("" if result["recovered"] else " (not recovered by the end)")
    print(f"{args.label:<44} | " + " | ".join(cells) + f" | {recovery}")
    if not os.environ.get("BENCH_ROWS"):
        return 0
    metrics = {}
    for phase in ("before", "during", "after"):
        metrics[f"ok_per_s_{phase}"] = {"value": result[f"ok_per_s_{phase}"], "unit": "2xx/s"}
        metrics[f"p99_ms_{phase}"] = {"value": result[f"p99_ms_{phase}"], "unit": "ms"}
        metrics[f"share_503_{phase}"] = {"value": result[f"share_503_{phase}"], "unit": "%"}
    metrics["recovery_s"] = {"value": result["recovery_s"], "unit": "s"}
    entry = {"table": "failure", "row": args.label, "command": args.command, "metrics": metrics,
             "attributes": {"policy": args.policy, "fault_kind": args.kind, "rate": summary["target_rate"],
                            "fault": fault, "recovered": result["recovered"], "slow_threshold_ms": threshold,
                            "unanswered": {p: result[f"unanswered_{p}"] for p in ("before", "during", "after")},
                            "timeline": timeline}}
    rowmodule.append(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
