#!/usr/bin/env python3
"""Round-by-round ratios of two targets, with how sure they are.

Reads the results file of http.sh (lines "TARGET PROTO rps p50 p99 ... ROUND"), pairs
each round of TARGET_A with the same round of TARGET_B, and prints per protocol the geometric
mean of A/B for rps, p50 and p99 with a 95 % bootstrap interval (resampling rounds; 10,000
draws, fixed seed). On this VM one round's p99 moves by ±10 % with the machine: an interval
that holds 1.00 means the rounds cannot tell the two apart.

    l7proxy/bench/paired.py RESULTS [TARGET_A [TARGET_B]]    # default: peerd haproxy
"""

import math
import random
import sys

COLUMNS = {"rps": 2, "p50": 3, "p99": 4}
DRAWS = 10_000


def geo_mean(logs):
    return math.exp(sum(logs) / len(logs))


def interval(logs, rng):
    means = sorted(geo_mean([rng.choice(logs) for _ in logs]) for _ in range(DRAWS))
    return means[int(DRAWS * 0.025)], means[int(DRAWS * 0.975) - 1]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    a = sys.argv[2] if len(sys.argv) > 2 else "peerd"
    b = sys.argv[3] if len(sys.argv) > 3 else "haproxy"
    rows = {}
    protos = []
    with open(path) as results:
        for line in results:
            fields = line.split()
            if len(fields) < 6:
                continue
            target, proto, round_ = fields[0], fields[1], fields[-1]
            try:
                rows[(target, proto, round_)] = [float(v) for v in fields[2:5]]
            except ValueError:
                continue
            if proto not in protos:
                protos.append(proto)
    rng = random.Random(1)
    for proto in protos:
        rounds = sorted(
            r for (t, p, r) in rows if t == a and p == proto and (b, proto, r) in rows
        )
        if not rounds:
            continue
        parts = []
        for name, column in COLUMNS.items():
            logs = []
            for r in rounds:
                x, y = rows[(a, proto, r)][column - 2], rows[(b, proto, r)][column - 2]
                if x > 0 and y > 0:
                    logs.append(math.log(x / y))
            if not logs:
                continue
            low, high = interval(logs, rng)
            parts.append(f"{name} {geo_mean(logs):.2f}x [{low:.2f}, {high:.2f}]")
        print(f"{a}/{b} {proto}, {len(rounds)} rounds paired: " + "  ".join(parts))


if __name__ == "__main__":
    main()
