#!/usr/bin/env python3
"""Locked (atomic read-modify-write) instructions per request in a callgrind profile.

A locked instruction costs tens of cycles where a plain one costs a fraction of one, so two
builds with the same instruction count can differ in time by how many they run. callgrind
counts how often each instruction ran (with --dump-instr=yes); objdump says which ones are
locked (a `lock` prefix, or `xchg` with memory); addr2line says where they come from.

    CG_OPTS=--dump-instr=yes PROTO=h2 REQUESTS=10000 KEEP=/tmp/cg.out \\
        l7proxy/bench/instructions.sh
    l7proxy/bench/atomics.py /tmp/cg.out 10000

Prints the total per request, then the sites in this repository that run them (the innermost
frame of the repository's own code, with the two frames above it) and, for the rest, the
library frames.
"""
import collections
import re
import subprocess
import sys


def parse(path):
    """(object, address) -> times the instruction ran."""
    names, counts = {}, collections.Counter()
    obj, last, skip = None, 0, False
    for line in open(path):
        line = line.rstrip("\n")
        m = re.match(r"^(ob|cob)=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1) == "ob":
                obj = names[m.group(2)]
            continue
        if line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        parts = line.split()
        tok = parts[0]
        if tok.startswith("0x"):
            last = int(tok, 16)
        elif tok[0] in "+-":
            delta = int(tok[1:], 16) if tok[1:].startswith("0x") else int(tok[1:])
            last = last + delta if tok[0] == "+" else last - delta
        elif tok != "*":
            last = int(tok)
        if skip:
            skip = False
        elif len(parts) >= 3:
            counts[(obj, last)] += int(parts[2])
    return counts


def locked(binary, ran):
    """Addresses of locked instructions in `binary` that ran."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary],
                         capture_output=True, text=True, check=True).stdout
    for line in out.split("\n"):
        m = re.match(r"^\s*([0-9a-f]+):\s+(.*)$", line)
        if not m:
            continue
        addr, ins = int(m.group(1), 16), m.group(2)
        if addr in ran and (ins.startswith("lock") or re.match(r"xchg\s+.*\(", ins)):
            yield addr


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: atomics.py CALLGRIND_OUT REQUESTS")
    path, requests = sys.argv[1], int(sys.argv[2])
    counts = parse(path)
    by_obj = collections.defaultdict(dict)
    for (obj, addr), n in counts.items():
        by_obj[obj][addr] = n
    total, sites = 0, collections.Counter()

    for obj, ran in by_obj.items():
        if not obj or not obj.startswith("/"):
            continue
        for addr in locked(obj, ran):
            n = ran[addr]
            total += n
            chain = subprocess.run(["addr2line", "-i", "-e", obj, hex(addr)],
                                   capture_output=True, text=True).stdout.split("\n")
            chain = [c.split(" (discriminator")[0] for c in chain if c]
            own = [c for c in chain if "/l7proxy/" in c or "/peerd/" in c]
            if own:
                key = " <- ".join(re.sub(r".*/(l7proxy|peerd)/", r"\1/", c) for c in own[:3])
            else:
                frames = [c for c in chain if "core/src/sync/atomic.rs" not in c]
                key = "lib: " + " <- ".join(re.sub(r".*/(library|index\.crates\.io-[0-9a-f]+)/", "", c)
                                           for c in frames[:2])
            sites[key] += n
    print(f"locked instructions per request: {total / requests:.1f}")
    for key, n in sites.most_common(30):
        print(f"{n / requests:7.2f}  {key}")


if __name__ == "__main__":
    main()
