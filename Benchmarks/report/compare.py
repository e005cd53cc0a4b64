#!/usr/bin/env python3
"""Prints two benchmark runs side by side (`make bench-compare A B`).

    compare.py A B

A and B are result folders (or their results.json). For every row and metric found in both: A's value,
B's value and B / A; and, where the row has a peer measured in the same run, the row/peer ratio in A and in
B. Ratios to a peer of the same run are the figures to compare across runs on a shared machine: the noise
of each run falls on both sides of its ratio. Rows found in only one run are listed at the end.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import with_ratios  # noqa: E402


def load(path):
    if os.path.isdir(path) or not path.endswith(".json"):
        path = os.path.join(path, "results.json")
    try:
        with open(path) as handle:
            results = json.load(handle)
    except (OSError, ValueError) as error:
        raise SystemExit(f"bench-compare: cannot read {path}: {error}")
    return {(r["table"], r["row"]): with_ratios(r) for r in results.get("rows", [])}, results.get("run", {})


def number(value):
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, run_a = load(argv[0])
    b, run_b = load(argv[1])
    print(f"A: {argv[0]} ({run_a.get('started', '?')}{', QUICK' if run_a.get('quick') else ''})")
    print(f"B: {argv[1]} ({run_b.get('started', '?')}{', QUICK' if run_b.get('quick') else ''})")
    header = f"{'table / row':<58} {'metric':<30} {'A':>10} {'B':>10} {'B/A':>7}   {'A:peer':>7} {'B:peer':>7}"
    print(header)
    print("-" * len(header))
    table = None
    for key in a:
        if key not in b:
            continue
        if key[0] != table:
            table = key[0]
            print(f"[{table}]")
        row_a, row_b = a[key], b[key]
        for metric, entry in row_a.get("metrics", {}).items():
            other = row_b.get("metrics", {}).get(metric)
            if not other:
                continue
            change = f"{other['value'] / entry['value']:.2f}x" if entry["value"] else "—"
            peer_a, peer_b = row_a.get("ratios", {}).get(metric), row_b.get("ratios", {}).get(metric)
            print(f"  {key[1][:56]:<56} {(metric + ' (' + entry['unit'] + ')')[:30]:<30} {number(entry['value']):>10} "
                  f"{number(other['value']):>10} {change:>7}   {(f'{peer_a:.2f}x' if peer_a else '—'):>7} "
                  f"{(f'{peer_b:.2f}x' if peer_b else '—'):>7}")
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    for name, keys in (("A", only_a), ("B", only_b)):
        if keys:
            print(f"only in {name}: " + "; ".join(f"{t} / {r}" for t, r in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
