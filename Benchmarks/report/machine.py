#!/usr/bin/env python3
"""Describes the machine a benchmark run is on, as JSON: what it is, and what else it is doing.

    machine.py describe          the hardware, the kernel, the versions of Swift, Redis, nginx and the JVM,
                                 the git commit, and the busy processes (below)
    machine.py busy [SECONDS]    the processes that used more than 5 % of a core over SECONDS (default 1):
                                 whether anything else was running
"""
import json
import os
import platform
import re
import subprocess
import sys
import time


def run(command):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip()
    return text or None


def first_line(text, pattern=None):
    if not text:
        return None
    for line in text.splitlines():
        if pattern is None or re.search(pattern, line):
            return line.strip()
    return None


def cpu_ticks():
    ticks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ticks[pid] = (name, command or name, int(fields[11]) + int(fields[12]))
    return ticks


def busy(seconds=1.0):
    """Processes using more than 5 % of a core over `seconds`, busiest first."""
    hz = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks()
    time.sleep(seconds)
    after = cpu_ticks()
    found = []
    for pid, (name, command, ticks) in after.items():
        if pid in before and pid != str(os.getpid()):
            share = (ticks - before[pid][2]) / hz / seconds * 100
            if share > 5:
                found.append({"pid": int(pid), "name": name, "command": command[:120], "cpu_percent": round(share, 1)})
    return sorted(found, key=lambda p: -p["cpu_percent"])


def describe():
    model = None
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = None
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit = run(["git", "-C", root, "rev-parse", "HEAD"])
    dirty = run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    with open("/proc/loadavg") as handle:
        load = [float(x) for x in handle.read().split()[:3]]
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1) if memory_kib else None,
        "kernel": platform.release(),
        "os": first_line(run(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""])),
        "swift": first_line(run(["swift", "--version"]), r"Swift version"),
        "redis": first_line(run(["redis-server", "--version"])),
        "nginx": first_line(run(["nginx", "-v"])),
        "jvm": first_line(run(["java", "-version"])),
        "wrk": first_line(run(["wrk", "--version"]), r"wrk"),
        "python": platform.python_version(),
        "git_commit": commit,
        "git_dirty": bool(dirty),
        "load_average_at_start": load,
        "busy_at_start": busy(),
    }


def main(argv):
    if argv[:1] == ["describe"]:
        print(json.dumps(describe(), indent=2, sort_keys=True))
    elif argv[:1] == ["busy"]:
        print(json.dumps(busy(float(argv[1]) if len(argv) > 1 else 1.0)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
