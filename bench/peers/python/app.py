"""The WSGI app of sockd's benchmarks (gunicorn, or fdserve.py under sockd).

Every response is 200 "hello from pid=<pid> worker=<slot> generation=<gen>"
with the pid in an X-Pid header too, so the load generator can tell which
process answered.
"""
import os


def app(environ, start_response):
    body = ("hello from pid=%d worker=%s generation=%s\n" % (
        os.getpid(), os.environ.get("SOCKD_WORKER", "0"),
        os.environ.get("SOCKD_GENERATION", "1"))).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("X-Pid", str(os.getpid())),
    ])
    return [body]
