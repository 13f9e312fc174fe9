#!/usr/bin/env python3
"""Serve app.py's WSGI app on the socket passed as fd 3, the way sockd (or
systemd socket activation) passes it, like one gunicorn sync worker: one
request per connection ("Connection: close"), one at a time.

It sends READY=1 to $NOTIFY_SOCKET once it accepts (so sockd can run it
with --ready notify), appends its pid to $BENCH_READY_FILE if set, and on
SIGTERM or SIGINT finishes the request in hand and exits 0 without closing
the shared socket's queue (the socket stays open in sockd).

It never changes the socket's blocking mode, which every worker shares.
Run it with the same interpreter as gunicorn for a fair comparison.
"""
import io
import os
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app import app  # noqa: E402


class Drain(Exception):
    pass


busy = False
stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True
    if not busy:
        raise Drain()


def notify(state):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def listener():
    n = os.environ.get("LISTEN_FDS")
    if not n or n == "0":
        sys.exit("fdserve.py: no socket passed: LISTEN_FDS is not set (run it under sockd)")
    lpid = os.environ.get("LISTEN_PID")
    if lpid is not None and lpid != str(os.getpid()):
        sys.exit("fdserve.py: sockets are for pid %s, not %d" % (lpid, os.getpid()))
    for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    return socket.socket(fileno=3)


def handle(conn):
    conn.settimeout(10)
    f = conn.makefile("rb")
    line = f.readline(65537)
    if not line:
        return
    method, path, _ = line.decode("latin-1").split(" ", 2)
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
    path, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    out = []

    def start_response(status, headers, exc_info=None):
        out.append("HTTP/1.1 %s\r\n" % status)
        for k, v in headers:
            out.append("%s: %s\r\n" % (k, v))
        out.append("Connection: close\r\n\r\n")

    body = b"".join(app(environ, start_response))
    conn.sendall("".join(out).encode("latin-1") + body)


def main():
    global busy
    sock = listener()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    notify("READY=1")
    f = os.environ.get("BENCH_READY_FILE")
    if f:
        with open(f, "a") as out:
            out.write("%d\n" % os.getpid())
    # The socket is shared and non-blocking (Go's sockets are): wait until
    # it is readable, then accept; another worker may have been faster.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    try:
        while not stopping:
            poller.poll()
            busy = True  # from here a signal waits for the loop to end
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                busy = False
                continue
            try:
                handle(conn)
            except OSError:
                pass
            finally:
                conn.close()
                busy = False
    except Drain:
        pass
    # Exiting closes only our descriptor: the socket and its queue live on
    # in sockd and in the other workers.
    sys.exit(0)


if __name__ == "__main__":
    main()
