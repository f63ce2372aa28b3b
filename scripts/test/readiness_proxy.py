#!/usr/bin/env python3
"""A TCP load balancer that follows readiness as kube-proxy does, for tests.

Usage: readiness_proxy.py LISTEN_PORT UPSTREAM_PORT... [--lag SECONDS]

Each new client connection goes to the next upstream in rotation (all on
127.0.0.1), round robin; bytes are copied both ways until either side closes.
Every 100 ms it asks each upstream's /readyz: an upstream leaves the rotation
--lag seconds (default 1) after /readyz first stops answering 200 (kube-proxy
takes about that long to stop routing to a pod whose readiness failed or that
is terminating), and comes back as soon as /readyz answers 200 again. A
connection to an upstream that refuses it is closed at once, as the kernel's
reset would be behind kube-proxy's NAT: the client sees an error.
"""

import asyncio
import itertools
import sys
import time

PROBE_EVERY = 0.1


class Upstream:
    def __init__(self, port):
        self.port = port
        self.failing_since = None
        self.in_rotation = False

    async def probe(self, lag):
        ready = False
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 0.5
            )
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 0.5)
            ready = line.split(b" ")[1:2] == [b"200"]
            writer.close()
        except (OSError, asyncio.TimeoutError, IndexError):
            pass
        now = time.monotonic()
        if ready:
            self.failing_since = None
            self.in_rotation = True
        else:
            if self.failing_since is None:
                self.failing_since = now
            if now - self.failing_since >= lag:
                self.in_rotation = False


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def main():
    args = sys.argv[1:]
    lag = 1.0
    if "--lag" in args:
        i = args.index("--lag")
        lag = float(args[i + 1])
        del args[i : i + 2]
    if len(args) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    listen, upstreams = int(args[0]), [Upstream(int(port)) for port in args[1:]]
    turn = itertools.count()

    async def probe_forever():
        while True:
            await asyncio.gather(*(upstream.probe(lag) for upstream in upstreams))
            await asyncio.sleep(PROBE_EVERY)

    async def handle(client_reader, client_writer):
        rotation = [upstream for upstream in upstreams if upstream.in_rotation]
        if not rotation:
            client_writer.close()
            return
        upstream = rotation[next(turn) % len(rotation)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
        except OSError:
            client_writer.transport.abort()
            return
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    for upstream in upstreams:
        await upstream.probe(lag)
    prober = asyncio.create_task(probe_forever())
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await asyncio.gather(server.serve_forever(), prober)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
