#!/usr/bin/env python3
"""A GELF receiver over UDP, for the tests: what Logstash's `gelf { }` input
does with Docker's gelf log driver, written down one message per line.

Each datagram is either a whole GELF message or a chunk of one. A chunk
starts with the magic bytes 0x1e 0x0f, then an 8-byte message id, the chunk's
sequence number and the number of chunks (one byte each), then its share of
the payload; the payload is whole once every chunk of that id has come, in
any order. A payload is gzip (starts 0x1f 0x8b), zlib (a zlib header: 0x78
and the header checksum), or plain JSON. A message whose chunks have not all
come within CHUNK_TIMEOUT seconds is dropped and counted, as the GELF spec
says.

    gelf_receiver.py --port 12201 --out messages.jsonl   receive until SIGTERM
    gelf_receiver.py --self-test                          check the decoder

Every decoded message is one line of --out: {"gelf": <the GELF object>,
"chunks": N (1: not chunked), "compression": "gzip" | "zlib" | "none",
"bytes": <payload bytes as sent>}; a datagram that cannot be decoded is a
line {"error": "..."}. The file is flushed after every line. On SIGTERM it
prints its totals on standard error and exits 0.
"""

import argparse
import gzip
import json
import os
import random
import signal
import socket
import sys
import time
import zlib

MAGIC = b"\x1e\x0f"
HEADER = 12  # magic (2) + message id (8) + sequence (1) + count (1)
MAX_CHUNKS = 128  # the GELF spec's limit
CHUNK_TIMEOUT = 5.0  # seconds, the GELF spec's


class Decoder:
    """Turns datagrams into (gelf, chunks, compression, bytes) tuples."""

    def __init__(self, timeout=CHUNK_TIMEOUT, clock=time.monotonic):
        self.timeout = timeout
        self.clock = clock
        self.pending = {}  # message id -> (first seen, count, {seq: bytes})
        self.expired = 0
        self.duplicates = 0

    def feed(self, datagram):
        """Returns the decoded message, or None while chunks are missing.
        Raises ValueError for a datagram that is not GELF."""
        self.expire()
        if datagram[:2] != MAGIC:
            return self._decode(datagram, 1)
        if len(datagram) < HEADER:
            raise ValueError(f"chunk of {len(datagram)} bytes, shorter than its header")
        message_id, seq, count = datagram[2:10], datagram[10], datagram[11]
        if count == 0 or count > MAX_CHUNKS or seq >= count:
            raise ValueError(f"chunk {seq} of {count}")
        first, expected, parts = self.pending.setdefault(message_id, (self.clock(), count, {}))
        if expected != count:
            raise ValueError(f"chunk says {count} chunks, earlier ones said {expected}")
        if seq in parts:
            self.duplicates += 1
            return None
        parts[seq] = datagram[HEADER:]
        if len(parts) < count:
            return None
        del self.pending[message_id]
        return self._decode(b"".join(parts[i] for i in range(count)), count)

    def expire(self):
        now = self.clock()
        for message_id in [m for m, (first, _, _) in self.pending.items() if now - first > self.timeout]:
            del self.pending[message_id]
            self.expired += 1

    @staticmethod
    def _decode(payload, chunks):
        if payload[:2] == b"\x1f\x8b":
            compression, text = "gzip", gzip.decompress(payload)
        elif len(payload) >= 2 and payload[0] & 0x0F == 8 and (payload[0] << 8 | payload[1]) % 31 == 0:
            compression, text = "zlib", zlib.decompress(payload)
        else:
            compression, text = "none", payload
        try:
            gelf = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{compression} payload of {len(payload)} bytes is not JSON: {err}") from err
        if not isinstance(gelf, dict) or "short_message" not in gelf:
            raise ValueError("not a GELF object (no short_message)")
        return gelf, chunks, compression, len(payload)


def chunk(payload, size, message_id):
    """Splits a payload into GELF chunks of at most `size` payload bytes."""
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [MAGIC + message_id + bytes([i, len(parts)]) + part for i, part in enumerate(parts)]


def self_test():
    """The decoder on made-up datagrams: every compression, chunks out of
    order and repeated, interleaved messages, an expired one, bad input."""
    rng = random.Random(1)
    line = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(5000))
    gelf = {"version": "1.1", "host": "node1", "short_message": line, "_container_name": "x"}
    raw = json.dumps(gelf).encode()
    failures = []
    checks = []

    def expect(what, ok):
        checks.append(what)
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}")
        if not ok:
            failures.append(what)

    for name, payload in (("gzip", gzip.compress(raw)), ("zlib", zlib.compress(raw)), ("none", raw)):
        decoder = Decoder()
        whole = decoder.feed(payload)
        expect(f"{name}, one datagram", whole == (gelf, 1, name, len(payload)))
        parts = chunk(payload, 1420, rng.randbytes(8))
        shuffled = parts[1:2] + parts[1:] + parts[:1]  # out of order, the second one twice
        results = [decoder.feed(p) for p in shuffled]
        got = [r for r in results if r is not None]
        expect(
            f"{name}, {len(parts)} chunks out of order, one repeated",
            len(parts) > 1 and got == [(gelf, len(parts), name, len(payload))] and decoder.duplicates == 1,
        )
    decoder = Decoder()
    a, b = chunk(gzip.compress(raw), 1000, b"A" * 8), chunk(zlib.compress(raw), 1000, b"B" * 8)
    got = [r for pair in zip(a, b) for r in map(decoder.feed, pair) if r is not None]
    expect("two chunked messages interleaved", [r[2] for r in got] == ["gzip", "zlib"])
    now = [0.0]
    decoder = Decoder(clock=lambda: now[0])
    parts = chunk(raw, 1000, b"C" * 8)
    decoder.feed(parts[0])
    now[0] = CHUNK_TIMEOUT + 1
    late = [decoder.feed(p) for p in parts[1:]]
    expect("a message whose chunks come too late is dropped", late == [None] * len(late) and decoder.expired == 1)
    for what, datagram in (
        ("not JSON", b"hello"),
        ("a chunk too short", MAGIC + b"12345"),
        ("chunk 3 of 2", MAGIC + b"D" * 8 + bytes([3, 2]) + b"x"),
        ("JSON without short_message", b'{"host": "x"}'),
    ):
        try:
            Decoder().feed(datagram)
            expect(f"{what}: refused", False)
        except ValueError:
            expect(f"{what}: refused", True)
    print(f"gelf_receiver self-test: {len(checks) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def serve(host, port, out_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, port))
    sock.settimeout(0.5)
    decoder = Decoder()
    totals = {"datagrams": 0, "messages": 0, "chunked": 0, "errors": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(out_path, "a", encoding="utf-8") as out:
        print(f"gelf_receiver: listening on udp://{host}:{port}, writing {out_path}", file=sys.stderr, flush=True)
        while not stop:
            try:
                datagram = sock.recv(65535)
            except socket.timeout:
                decoder.expire()  # drop stale chunks while idle
                continue
            except InterruptedError:
                continue
            totals["datagrams"] += 1
            try:
                result = decoder.feed(datagram)
            except (ValueError, OSError, EOFError, zlib.error) as err:
                totals["errors"] += 1
                record = {"error": str(err)}
            else:
                if result is None:
                    continue
                gelf, chunks, compression, size = result
                totals["messages"] += 1
                totals["chunked"] += chunks > 1
                record = {"gelf": gelf, "chunks": chunks, "compression": compression, "bytes": size}
            out.write(json.dumps(record) + "\n")
            out.flush()
    totals["expired"] = decoder.expired
    totals["duplicate chunks"] = decoder.duplicates
    print("gelf_receiver: " + ", ".join(f"{v} {k}" for k, v in totals.items()), file=sys.stderr, flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12201)
    parser.add_argument("--out", default=os.devnull)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    return serve(args.host, args.port, args.out)


if __name__ == "__main__":
    sys.exit(main())
