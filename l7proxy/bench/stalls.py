#!/usr/bin/env python3
"""Where a run's slow requests come from.

Cuts h2load per-request logs (--log-file; http.sh keeps them with KEEP_LOGS=DIR) into 100 ms
windows by request start and calls a window stalled when fewer than 80 % of the run's median
window's requests started in it. Prints per log: the requests, the windows and how many
stalled, the p99 of all requests, the share of the slowest 1 % that started in stalled windows,
and the p99 of the requests outside stalled windows.

    l7proxy/bench/stalls.py /tmp/h2logs/*.log
    h2load -c64 -n200000 --log-file=/tmp/direct.log http://127.0.0.1:18080/ &&
        l7proxy/bench/stalls.py /tmp/direct.log     # the endpoint alone stalls too
"""

import os
import sys

WINDOW_US = 100_000
STALLED = 0.8


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def analyse(path):
    # h2load's log: start time (us since the epoch), status, duration (us).
    rows = []
    with open(path) as log:
        for line in log:
            fields = line.split()
            if len(fields) >= 3:
                rows.append((int(fields[0]), int(fields[2])))
    if not rows:
        return None
    t0 = min(start for start, _ in rows)
    windows = [(start - t0) // WINDOW_US for start, _ in rows]
    last = max(windows)
    counts = [0] * (last + 1)
    for w in windows:
        counts[w] += 1
    full = sorted(counts[:last]) or counts  # the last window is partial
    median = full[(len(full) - 1) // 2]
    stalled = {w for w in range(last) if counts[w] < STALLED * median}
    durations = sorted(d for _, d in rows)
    p99 = pct(durations, 0.99)
    slow = [w for w, (_, d) in zip(windows, rows) if d > p99]
    calm = sorted(d for w, (_, d) in zip(windows, rows) if w not in stalled)
    return (
        len(rows),
        last + 1,
        len(stalled),
        p99 / 1000,
        100 * sum(w in stalled for w in slow) / max(1, len(slow)),
        pct(calm, 0.99) / 1000 if calm else 0,
    )


def main():
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} H2LOAD_LOG...")
    print(f"{'log':<24} {'requests':>8} {'windows':>8} {'stalled':>8} {'p99_ms':>8}"
          f" {'slow_in_stall':>14} {'p99_unstalled':>14}")
    for path in sys.argv[1:]:
        result = analyse(path)
        if result is None:
            print(f"{os.path.basename(path):<24} empty")
            continue
        n, windows, stalled, p99, share, calm = result
        print(f"{os.path.basename(path):<24} {n:>8} {windows:>8} {stalled:>8} {p99:>8.3f}"
              f" {share:>13.0f}% {calm:>14.3f}")


if __name__ == "__main__":
    main()
