#!/usr/bin/env python3
"""Builds a benchmark run's results.json, report.md and plots.

    report.py FOLDER [--out DIR]

FOLDER is a `make bench` result folder. When it holds rows.jsonl (the rows the comparison scripts
wrote), machine.json and stages.json, they are assembled into FOLDER/results.json first; otherwise
FOLDER/results.json is read as it is. report.md and plots/*.png are written to DIR (default FOLDER).
Needs matplotlib (`make bench` installs it into Benchmarks/.venv).
"""
import argparse
import json
import math
import os
import sys

SCHEMA = 1

# Tables in report order: id -> (title, what it measures).
TABLES = {
    "core": ("In-process check: Tollgate against Guava",
             "`MemoryStore.checkNow` against Guava's RateLimiter in a ConcurrentHashMap, ns per check per thread "
             "(median of the rounds; lower is better). ratio = Tollgate / Guava."),
    "redis-cpu": ("Redis CPU per check",
                  "redis-server's own CPU time per command (redis-benchmark -c 4 -P 32, 512 keys), median of the rounds."),
    "redis-memory": ("Redis memory per key", "`MEMORY USAGE` of one key of each layout, bytes."),
    "redis-client": ("Tollgate's Redis client against redis-benchmark",
                     "The three-limit plan through `tollgate redis-load` and redis-benchmark running the same script "
                     "with the same clients and commands in flight. ratio = Tollgate / redis-benchmark."),
    "redis-coalesce": ("Group commit of hot keys", "The three-limit plan with coalescing on; the peer is the same run with it off."),
    "python-limits": ("Python `limits`", "MovingWindowRateLimiter on Redis, one caller."),
    "proxy": ("Sidecar against nginx limit_req (closed loop)",
              "wrk -t2 against each server in turn; CPU per request of each component (the proxy's own process, "
              "redis-server, the upstream nginx) over the requests answered. ratio = row / nginx limit_req."),
    "openloop": ("Open-loop latency",
                 "tollgate-openloop at 25, 50 and 75 % of each server's measured maximum (the closed-loop row above); "
                 "latency from each request's due time. ratio = row / nginx limit_req at the same share."),
    "failure": ("Failure modes",
                "The sidecar on Redis at a fixed rate while Redis is slowed (DEBUG SLEEP) or killed and restarted, for "
                "each failure policy: throughput and p99 during and after the fault, the share of 503s, recovery time."),
    "http1": ("HTTP/1.1 parsers", "ns to parse one typical head, from a fresh parser."),
}

# Sizing: the rates to size for, and the share of a core each process may use at that rate.
SIZING_RATES = [10_000, 50_000, 200_000]
HEADROOM = 0.5


def load_jsonl(path):
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as error:
                raise SystemExit(f"{path}:{number}: not a JSON row ({error})")
    return rows


def with_ratios(row):
    """The row with `ratios`: its value over its peer's, for every metric both have."""
    peer = row.get("peer") or {}
    ratios = {}
    for name, metric in row.get("metrics", {}).items():
        other = peer.get("metrics", {}).get(name)
        if other and other.get("value"):
            ratios[name] = round(metric["value"] / other["value"], 3)
    if ratios:
        row = dict(row, ratios=ratios)
    return row


def assemble(folder):
    """FOLDER/rows.jsonl + machine.json + stages.json -> results.json (returned and written)."""
    rows = [with_ratios(r) for r in load_jsonl(os.path.join(folder, "rows.jsonl"))]
    machine, run = {}, {}
    if os.path.exists(os.path.join(folder, "machine.json")):
        with open(os.path.join(folder, "machine.json")) as handle:
            machine = json.load(handle)
    if os.path.exists(os.path.join(folder, "stages.json")):
        with open(os.path.join(folder, "stages.json")) as handle:
            run = json.load(handle)
    load_path = os.path.join(folder, "load.txt")
    if os.path.exists(load_path):
        samples = []
        with open(load_path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2:
                    samples.append([float(parts[0]), float(parts[1])])
        machine["load_average_samples"] = samples
        if samples:
            machine["load_average_1m_max"] = max(s[1] for s in samples)
    results = {"schema": SCHEMA, "run": run, "machine": machine, "rows": rows}
    results["sizing"] = sizing(rows)
    with open(os.path.join(folder, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    return results


def find(rows, table, **attributes):
    for row in rows:
        if row.get("table") == table and all(row.get("attributes", {}).get(k) == v for k, v in attributes.items()):
            return row
    return None


def value(row, metric):
    if row and metric in row.get("metrics", {}):
        return row["metrics"][metric]["value"]
    return None


def sizing(rows):
    """Cores for each rate in SIZING_RATES from the measured CPU per request and per check."""
    sidecar = value(find(rows, "proxy", id="redis"), "cpu_us_per_request")
    memory = value(find(rows, "proxy", id="memory"), "cpu_us_per_request")
    nginx = value(find(rows, "proxy", id="nginx"), "cpu_us_per_request")
    redis_proxy = value(find(rows, "proxy", id="redis"), "redis_cpu_us_per_request")
    redis_spread = value(find(rows, "redis-cpu", id="three"), "redis_cpu_us_per_check")
    redis_candidates = [v for v in (redis_proxy, redis_spread) if v]
    redis = max(redis_candidates) if redis_candidates else None

    def cores(rate, micros):
        return None if not micros else max(1, math.ceil(rate * micros / 1e6 / HEADROOM))

    sheet = {
        "headroom": HEADROOM,
        "rule": (f"Each process is sized to be at most {int(HEADROOM * 100)} % busy at the planned rate: "
                 f"cores = ceil(rate x CPU µs per request / 10^6 / {HEADROOM}). A Redis primary runs its commands on "
                 "one thread, so each primary counts as one core. The Redis figure is the larger of redis-server's "
                 "CPU per request under the sidecar (hot key, checks share calls) and per check of the three-limit "
                 "script with keys spread out (no sharing): the plan for keys that are not hot."),
        "inputs": {"sidecar_redis_us_per_request": sidecar, "sidecar_memory_us_per_request": memory,
                   "nginx_limit_req_us_per_request": nginx, "redis_us_per_check": redis,
                   "redis_us_per_check_under_sidecar": redis_proxy, "redis_us_per_check_spread_keys": redis_spread},
        "rows": [],
    }
    for rate in SIZING_RATES:
        sheet["rows"].append({
            "rate": rate,
            "sidecar_cores": cores(rate, sidecar),
            "redis_primaries": cores(rate, redis),
            "sidecar_memory_cores": cores(rate, memory),
            "nginx_cores": cores(rate, nginx),
        })
    return sheet


# ---- rendering ---------------------------------------------------------------------------------------

def fmt(number):
    if number is None:
        return "—"
    if isinstance(number, float):
        if abs(number) >= 1000:
            return f"{number:,.0f}"
        if abs(number) >= 10:
            return f"{number:.1f}"
        return f"{number:.3g}" if abs(number) < 1 else f"{number:.2f}"
    return f"{number:,}" if isinstance(number, int) else str(number)


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def metric_names(rows, key):
    names = []
    for row in rows:
        for name in (row.get(key) or {}).get("metrics", {}) if key == "peer" else row.get("metrics", {}):
            if name not in names:
                names.append(name)
    return names


def units(rows, name):
    for row in rows:
        for source in (row.get("metrics", {}), (row.get("peer") or {}).get("metrics", {})):
            if name in source:
                return source[name]["unit"]
    return ""


def render_table(rows):
    """One markdown table: every row, its metrics, its peer and the ratios; then the commands."""
    names = metric_names(rows, "metrics")
    peer_names = metric_names(rows, "peer")
    has_peer = any(row.get("peer") for row in rows)
    ratio_names = [n for n in names if any(n in row.get("ratios", {}) for row in rows)]
    header = ["#", "row"] + [f"{n} ({units(rows, n)})" for n in names]
    if has_peer:
        header += ["peer"] + [f"peer {n}" for n in peer_names] + [f"ratio {n}" for n in ratio_names]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    commands = []
    for index, row in enumerate(rows, 1):
        values = [str(index), row["row"]] + [fmt(value(row, n)) for n in names]
        if has_peer:
            peer = row.get("peer") or {}
            values += [peer.get("name", "—")]
            values += [fmt(peer.get("metrics", {}).get(n, {}).get("value")) for n in peer_names]
            values += [f"{row['ratios'][n]:.2f}x" if n in row.get("ratios", {}) else "—" for n in ratio_names]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
        commands.append(f"{index}. `{row['command']}`" + (f"; peer: `{row['peer']['command']}`"
                                                          if row.get("peer", {}).get("command") else ""))
    return "\n".join(lines) + "\n\nCommands:\n\n" + "\n".join(commands) + "\n"


def save(figure, path, dpi=90):
    import matplotlib.pyplot as plt
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return True


def plot_redis_callers(rows, path):
    rows = [r for r in rows if r["table"] == "redis-client" and "callers" in r.get("attributes", {})]
    if not rows:
        return False
    import matplotlib.pyplot as plt
    rows.sort(key=lambda r: r["attributes"]["callers"])
    callers = [r["attributes"]["callers"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(callers, [value(r, "checks_per_s") for r in rows], "o-", label="Tollgate redis-load")
    right.plot(callers, [value(r, "p99_ms") for r in rows], "o-", label="Tollgate redis-load")
    peers = [r.get("peer", {}).get("metrics", {}) for r in rows]
    if all("checks_per_s" in p for p in peers):
        name = rows[0]["peer"]["name"]
        left.plot(callers, [p["checks_per_s"]["value"] for p in peers], "s--", label=name)
        right.plot(callers, [p["p99_ms"]["value"] for p in peers], "s--", label=name)
    for axis, title, unit in ((left, "throughput", "checks/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("callers")
        axis.set_ylabel(unit)
        axis.set_title(f"Redis store, three-limit plan: {title}")
        axis.grid(True, alpha=0.3)
        axis.legend()
    right.set_yscale("log")
    return save(figure, path)


def plot_sidecar_cpu(rows, path):
    rows = [r for r in rows if r["table"] == "proxy" and r.get("attributes", {}).get("id") != "upstream"]
    if not rows:
        return False
    import matplotlib.pyplot as plt
    components = [("cpu_us_per_request", "proxy"), ("redis_cpu_us_per_request", "Redis"),
                  ("upstream_cpu_us_per_request", "upstream")]
    figure, axis = plt.subplots(figsize=(9, 4))
    bottoms = [0.0] * len(rows)
    labels = [r["row"] for r in rows]
    for metric, label in components:
        heights = [value(r, metric) or 0.0 for r in rows]
        axis.bar(labels, heights, bottom=bottoms, label=label)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    axis.set_ylabel("CPU µs per request")
    axis.set_title("CPU per request by component")
    axis.legend()
    axis.grid(True, axis="y", alpha=0.3)
    plt.setp(axis.get_xticklabels(), rotation=15, ha="right")
    return save(figure, path)


def plot_latency_curves(rows, path):
    rows = [r for r in rows if r["table"] == "openloop" and r.get("attributes", {}).get("percentiles")]
    if not rows:
        return False
    import matplotlib.pyplot as plt
    shares = sorted({r["attributes"].get("share", 0) for r in rows})
    figure, axes = plt.subplots(1, len(shares), figsize=(5 * len(shares), 4), squeeze=False)
    for axis, share in zip(axes[0], shares):
        for row in (r for r in rows if r["attributes"].get("share", 0) == share):
            points = [(p, ms) for p, ms in row["attributes"]["percentiles"] if p < 100 and ms > 0]
            if not points:
                continue
            axis.plot([1 / (1 - p / 100) for p, _ in points], [ms for _, ms in points],
                      label=row["attributes"].get("target", row["row"]))
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(left=1)
        axis.set_xticks([2, 10, 100, 1000, 10000])
        axis.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%"])
        axis.minorticks_off()
        axis.set_xlabel("percentile")
        axis.set_ylabel("latency, ms (from the due time)")
        axis.set_title(f"{share} % of the maximum rate")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    return save(figure, path)


def plot_core(rows, path):
    rows = [r for r in rows if r["table"] == "core" and value(r, "ns_per_check") is not None
            and r.get("peer", {}).get("name", "").startswith("Guava")]
    if not rows:
        return False
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(11, 4.5))
    positions = range(len(rows))
    tollgate = [value(r, "ns_per_check") for r in rows]
    guava = [r.get("peer", {}).get("metrics", {}).get("ns_per_check", {}).get("value", 0) for r in rows]
    axis.bar([p - 0.2 for p in positions], tollgate, width=0.4, label="Tollgate")
    axis.bar([p + 0.2 for p in positions], guava, width=0.4, label="Guava")
    axis.set_xticks(list(positions))
    axis.set_xticklabels([r["row"] for r in rows], rotation=25, ha="right", fontsize=8)
    axis.set_ylabel("ns per check per thread")
    axis.set_title("In-process check: Tollgate against Guava")
    axis.legend()
    axis.grid(True, axis="y", alpha=0.3)
    return save(figure, path)


def plot_failures(rows, path):
    rows = [r for r in rows if r["table"] == "failure" and r.get("attributes", {}).get("timeline")]
    if not rows:
        return False
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(len(rows), 1, figsize=(10, 1.9 * len(rows) + 0.6), squeeze=False, sharex=True)
    for axis, row in zip(axes[:, 0], rows):
        timeline = row["attributes"]["timeline"]
        times = [t[0] for t in timeline]
        axis.fill_between(times, [t[1] * 100 for t in timeline], step="post", alpha=0.4, color="tab:red", label="503 %")
        axis.set_ylim(0, 105)
        axis.set_ylabel("503 %", fontsize=8)
        other = axis.twinx()
        other.plot(times, [max(t[2], 0.01) for t in timeline], drawstyle="steps-post", color="tab:blue", label="p99 ms")
        other.set_yscale("log")
        other.set_ylabel("p99 ms", fontsize=8)
        fault = row["attributes"].get("fault")
        if fault:
            axis.axvspan(fault[0], fault[1], color="grey", alpha=0.15)
        axis.set_title(row["row"], fontsize=9)
    axes[-1, 0].set_xlabel("seconds from the start of the measured period (grey: the fault)")
    return save(figure, path, dpi=80)


PLOTS = [
    ("redis_callers.png", plot_redis_callers, "Redis store: throughput and p99 against callers",
     "Tollgate's client (`tollgate redis-load`, three-limit plan) and redis-benchmark running the same script, "
     "at each number of callers. Throughput should flatten where Redis is saturated; p99 (log scale) grows with "
     "the callers queued behind it."),
    ("sidecar_cpu.png", plot_sidecar_cpu, "CPU per request by component",
     "For each proxy row, the CPU time per request of the proxy's own process, of redis-server and of the upstream "
     "nginx, stacked. The proxy part is the figure to compare between builds; Redis' part is what a shared Redis "
     "pays per request."),
    ("sidecar_latency.png", plot_latency_curves, "Latency percentile curves (open loop)",
     "One panel per load level (a share of each server's own measured maximum), one curve per server: latency "
     "from each request's due time against the percentile, both axes logarithmic. A curve that climbs early has "
     "a heavy tail; a stall shows as a jump at the right."),
    ("core_vs_guava.png", plot_core, "In-process check against Guava",
     "ns per check per thread for each case, Tollgate beside Guava (lower is better)."),
    ("failure_timeline.png", plot_failures, "Failure modes over time",
     "For each failure scenario: the share of 503s (red) and p99 (blue, log scale) per time slice; grey marks "
     "the fault."),
]


def render(results, out):
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    rows = results.get("rows", [])
    machine = results.get("machine", {})
    run = results.get("run", {})
    lines = ["# Tollgate benchmark report", ""]
    if run:
        lines.append(f"Run: {run.get('started', '?')} to {run.get('finished', '?')}, "
                     f"{'QUICK (reduced: a smoke check, not figures to quote)' if run.get('quick') else 'full'}; "
                     f"`{run.get('command', 'make bench')}`.")
        failed = [s["name"] for s in run.get("stages", []) if s.get("status") != "ok"]
        if failed:
            lines.append(f"**Stages that failed** (see logs/): {', '.join(failed)}.")
        lines.append("")
    lines += ["## Machine", "", "| | |", "|---|---|"]
    for key in ("cpu_model", "cores", "memory_gib", "kernel", "os", "swift", "redis", "nginx", "jvm", "wrk",
                "git_commit", "git_dirty", "load_average_at_start", "load_average_1m_max"):
        if key in machine:
            lines.append(f"| {key} | {cell(machine[key])} |")
    busy = machine.get("busy_at_start") or []
    others = ", ".join(f"{p['name']} {p['cpu_percent']} %" for p in busy[:6]) or "nothing above 5 % of a core"
    lines += ["", f"Other work at the start: {others}. Compare rows of one run (ratios), not figures across runs "
              "on a busy machine.", ""]

    tables = []
    for row in rows:
        if row["table"] not in tables:
            tables.append(row["table"])
    tables.sort(key=lambda t: list(TABLES).index(t) if t in TABLES else len(TABLES))
    for table in tables:
        title, about = TABLES.get(table, (table, ""))
        lines += [f"## {title}", "", about, "", render_table([r for r in rows if r["table"] == table]), ""]

    sheet = results.get("sizing") or sizing(rows)
    lines += ["## Sizing sheet: the three-limit plan", "", sheet["rule"], ""]
    inputs = sheet["inputs"]
    lines.append("Measured inputs (CPU µs): " + ", ".join(f"{k} {fmt(v)}" for k, v in inputs.items()) + ".")
    lines += ["", "| requests/s | sidecar cores (Redis store) | Redis primaries | sidecar cores (in-memory store) | "
              "nginx limit_req cores |", "|---|---|---|---|---|"]
    for entry in sheet["rows"]:
        lines.append(f"| {entry['rate']:,} | {fmt(entry['sidecar_cores'])} | {fmt(entry['redis_primaries'])} | "
                     f"{fmt(entry['sidecar_memory_cores'])} | {fmt(entry['nginx_cores'])} |")
    lines += ["", "nginx `limit_req` keeps its counters in the shared memory of one nginx instance: its column holds "
              "only for one instance, or where each instance may enforce its own share of the limit. The in-memory "
              "sidecar likewise limits per replica. The upstream's own CPU is not included.", ""]

    lines += ["## Plots", ""]
    for name, function, title, about in PLOTS:
        if function(rows, os.path.join(out, "plots", name)):
            lines += [f"### {title}", "", about, "", f"![{title}](plots/{name})", ""]
        else:
            lines += [f"### {title}", "", "(no rows for this plot in this run)", ""]
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write("\n".join(lines))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if os.path.exists(os.path.join(args.folder, "rows.jsonl")):
        results = assemble(args.folder)
    else:
        path = os.path.join(args.folder, "results.json")
        try:
            with open(path) as handle:
                results = json.load(handle)
        except (OSError, ValueError) as error:
            raise SystemExit(f"report: cannot read {path}: {error}")
        if results.get("schema") != SCHEMA:
            raise SystemExit(f"report: {path}: schema {results.get('schema')!r}, expected {SCHEMA}")
        results["rows"] = [with_ratios(r) for r in results.get("rows", [])]
    out = args.out or args.folder
    render(results, out)
    print(f"report: {os.path.join(out, 'report.md')} ({len(results['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
