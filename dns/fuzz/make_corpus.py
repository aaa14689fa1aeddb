#!/usr/bin/env python3
"""Writes the seed corpus in corpus/query/. Files named valid-* must get a real answer (not
FORMERR); every other file must be answered FORMERR or dropped, and counted as malformed."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "query")


def header(qid, flags, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def name(text):
    out = b""
    for label in text.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def question(text, qtype, qclass=1):
    return name(text) + struct.pack(">HH", qtype, qclass)


def opt(size=1232, version=0, options=b""):
    return b"\x00" + struct.pack(">HHBBHH", 41, size, 0, version, 0, len(options)) + options


RD = 0x0100
COOKIE = struct.pack(">HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"

CORPUS = {
    "valid-a-web": header(1, RD) + question("web.shop.global", 1),
    "valid-aaaa-edns-cookie": header(2, RD, ar=1) + question("web.shop.global", 28) + opt(options=COOKIE),
    "valid-srv": header(3, RD) + question("_http._tcp.web.shop.global", 33),
    "valid-mixed-case": header(4, RD) + question("EaSt.WEB.shop.GLOBAL", 1),
    "valid-nxdomain": header(5, RD) + question("nope.shop.global", 1),
    "valid-apex-soa": header(6, RD) + question("global", 6),
    "valid-any": header(7, RD) + question("web.shop.global", 255),
    "valid-forward": header(8, RD) + question("example.com", 1),
    "valid-chaos": header(9, RD) + question("version.bind", 16, qclass=3),
    "valid-badvers": header(10, RD, ar=1) + question("web.shop.global", 1) + opt(version=1),
    "valid-big-srv-small-edns": header(11, RD, ar=1) + question("_pg._tcp.many.shop.global", 33) + opt(size=512),
    "malformed-empty": b"",
    "malformed-short-header": header(12, RD)[:7],
    "malformed-no-question": header(13, RD, qd=0),
    "malformed-two-questions": header(14, RD, qd=2) + question("a.global", 1) + question("b.global", 1),
    "malformed-label-overrun": header(15, RD) + b"\x3fweb",
    "malformed-pointer-loop": header(16, RD) + b"\xc0\x0c" + struct.pack(">HH", 1, 1),
    "malformed-response": header(17, 0x8180) + question("web.shop.global", 1),
    "malformed-two-opt": header(18, RD, ar=2) + question("web.shop.global", 1) + opt() + opt(),
    "malformed-missing-answer": header(19, RD, an=1) + question("web.shop.global", 1),
}

os.makedirs(OUT, exist_ok=True)
for file, data in CORPUS.items():
    with open(os.path.join(OUT, file), "wb") as f:
        f.write(data)
