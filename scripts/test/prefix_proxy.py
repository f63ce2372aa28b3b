#!/usr/bin/env python3
"""An HTTP reverse proxy that serves an upstream under a path, for tests.

Usage: prefix_proxy.py LISTEN_PORT UPSTREAM_PORT PREFIX

As `kubectl proxy` serves a Service under
/api/v1/namespaces/<namespace>/services/<service>/proxy/: a request for
PREFIX/<path> goes to 127.0.0.1:UPSTREAM_PORT as /<path>; PREFIX alone is
redirected to PREFIX/ (301, as the API server does); anything else is 404.
The answer is passed back byte for byte as it comes (an event stream flows
through), and nothing in it is rewritten: unlike the API server, which
rewrites absolute links in HTML pages and Location headers, a page that works
through this proxy needs no rewriting at all, which is also what an Ingress
with a path prefix or any plain proxy gives. One connection per request
(`Connection: close` both ways).
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except ConnectionError:
            pass


async def answer(writer, status, headers=""):
    writer.write(f"HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    writer.close()


async def handle(client_reader, client_writer, upstream_port, prefix):
    try:
        head = await client_reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        client_writer.close()
        return
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = request_line.split(" ")
    except ValueError:
        await answer(client_writer, "400 Bad Request")
        return
    path, _, query = target.partition("?")
    if path == prefix:
        await answer(client_writer, "301 Moved Permanently", f"Location: {prefix}/{'?' + query if query else ''}\r\n")
        return
    if not path.startswith(prefix + "/"):
        await answer(client_writer, "404 Not Found")
        return
    target = path[len(prefix):] + (f"?{query}" if query else "")
    headers = [h for h in header_lines if h and not h.lower().startswith(("connection:", "keep-alive:"))]
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        await answer(client_writer, "502 Bad Gateway")
        return
    upstream_writer.write(("\r\n".join([f"{method} {target} {version}", *headers, "Connection: close"]) + "\r\n\r\n")
                          .encode("latin-1"))
    await upstream_writer.drain()
    await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def main(listen_port, upstream_port, prefix):
    server = await asyncio.start_server(lambda r, w: handle(r, w, upstream_port, prefix), "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4 or not sys.argv[3].startswith("/") or sys.argv[3].endswith("/"):
        sys.exit("usage: prefix_proxy.py LISTEN_PORT UPSTREAM_PORT /PREFIX (no trailing slash)")
    try:
        asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
    except KeyboardInterrupt:
        pass
