"""A WSGI app exercising the corners of PEP 3333, one route per corner."""

import json
import logging
import os
import sys
import tempfile
import time
from wsgiref.validate import validator

log = logging.getLogger("conformance")
IMPORT_PID = os.getpid()
CLOSED = []


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Closing:
    """An iterable whose close() records that it was called."""

    def __init__(self, chunks, tag, delay=0.0):
        self.chunks = chunks
        self.tag = tag
        self.delay = delay

    def __iter__(self):
        for c in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            yield c

    def close(self):
        CLOSED.append(self.tag)
        with open(os.path.join(tempfile.gettempdir(), "ferricorn-closed-" + self.tag), "w") as f:
            f.write("closed")


def environ_route(environ, start_response):
    shown = {}
    for k, v in environ.items():
        if isinstance(v, (str, bool, int)):
            shown[k] = v
        elif k == "wsgi.version":
            shown[k] = list(v)
        else:
            shown[k] = type(v).__name__
    return _json(start_response, shown)


def environ_size_route(environ, start_response):
    """The environ's size as it arrived, before the app adds anything."""
    return _json(start_response, {"size": sys.getsizeof(environ), "keys": len(environ)})


def read_route(environ, start_response):
    """Read the body the way the query string says, report what each call returned."""
    inp = environ["wsgi.input"]
    how = environ.get("QUERY_STRING", "")
    out = []
    if how.startswith("read="):
        n = int(how[5:])
        while True:
            b = inp.read(n)
            out.append(len(b))
            if not b:
                break
    elif how.startswith("readline="):
        n = int(how[9:])
        while True:
            b = inp.readline(n)
            out.append(b.decode("latin-1"))
            if not b:
                break
    elif how == "readlines":
        out = [b.decode("latin-1") for b in inp.readlines()]
    elif how.startswith("readlines="):
        out = [b.decode("latin-1") for b in inp.readlines(int(how[10:]))]
    elif how == "iter":
        out = [b.decode("latin-1") for b in inp]
    else:
        data = inp.read()
        out = {"len": len(data), "sum": sum(data) % 65536}
    return _json(start_response, out)


def stream_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (("chunk%d\n" % i).encode() for i in range(100))


def lazy_route(environ, start_response):
    # start_response is called inside the first iteration, as PEP 3333 allows.
    def gen():
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Lazy", "yes")])
        yield b""
        yield b"lazy body"

    return gen()


def write_route(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-")
    write(b"then-")
    return [b"returned"]


def exc_info_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise RuntimeError("boom before body")
    except RuntimeError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Replaced", "1")], sys.exc_info())
    return [b"replaced"]


def exc_info_late_route(environ, start_response):
    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise RuntimeError("boom after body")
        except RuntimeError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    return gen()


def error_route(environ, start_response):
    raise ValueError("the app failed on purpose")


def crlf_route(environ, start_response):
    start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: evil=1")])
    return [b"should not be sent"]


def cl_cut_route(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"12345", b"6789"]


def short_body_route(environ, start_response):
    """Declares more than it sends: the response cannot be completed."""
    start_response("200 OK", [("Content-Length", "20")])
    return iter([b"hello"])


def big_route(environ, start_response):
    """QUERY_STRING bytes, streamed in 64 KiB pieces."""
    size = int(environ["QUERY_STRING"] or 1048576)
    piece = b"x" * 65536
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    while size > 0:
        yield piece[:size]
        size -= len(piece)


def start_then_raise_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("after start_response, before any body")


def generator_raise_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        raise RuntimeError("before the first chunk")
        yield b"never"

    return gen()


def start_twice_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"never"]


def str_body_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["a str, not bytes"]


def two_readers_route(environ, start_response):
    """Two threads (greenlets under gevent) read one wsgi.input at once."""
    import threading

    inp = environ["wsgi.input"]
    got = [0, 0]

    def reader(i):
        log.warning("reader %d reading", i)
        while True:
            b = inp.read(1)
            if not b:
                break
            got[i] += len(b)

    threads = [threading.Thread(target=reader, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    stuck = any(t.is_alive() for t in threads)
    return _json(start_response, {"total": sum(got), "stuck": stuck})


def broken_pipe_route(environ, start_response):
    """Write to a pipe whose reader has gone: what does the app see?"""
    r, w = os.pipe()
    os.close(r)
    try:
        os.write(w, b"x")
        seen = b"no error"
    except BrokenPipeError:
        seen = b"BrokenPipeError"
    finally:
        os.close(w)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [seen]


def raw_status_route(environ, start_response):
    """The status line exactly as the query gives it (percent-decoded)."""
    from urllib.parse import unquote

    start_response(unquote(environ["QUERY_STRING"]), [("Content-Type", "text/plain")])
    return [b"raw status"]


def no_cl_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"abc", b"def"])


def hop_route(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=99"),
         ("Transfer-Encoding", "gzip"), ("Upgrade", "h2"), ("X-Kept", "1")],
    )
    return [b"hop"]


def status_route(environ, start_response):
    code = environ["QUERY_STRING"] or "204"
    reasons = {"204": "No Content", "304": "Not Modified", "200": "OK"}
    start_response("%s %s" % (code, reasons.get(code, "X")), [("Content-Type", "text/plain")])
    return [b"body that must not be sent"]


def close_route(environ, start_response):
    tag = environ["QUERY_STRING"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing([b"a", b"b", b"c"], tag)


def close_slow_route(environ, start_response):
    tag = environ["QUERY_STRING"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing([b"x" * 65536] * 400, tag, delay=0.01)


class SlowClose:
    """A complete body whose close() takes a while (Flask's teardown, or
    work done after the response with werkzeug's call_on_close)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __iter__(self):
        yield b"answered"

    def close(self):
        time.sleep(self.seconds)
        log.warning("close done")


def answer_then_close_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
    return SlowClose(float(environ["QUERY_STRING"] or 1))


def file_route(environ, start_response):
    path = os.path.join(tempfile.gettempdir(), "ferricorn-file-wrapper.bin")
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(bytes(range(256)) * 4096)
        os.replace(path + ".tmp", path)
    f = open(path, "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(path)))])
    return environ["wsgi.file_wrapper"](f, 32768)


def log_route(environ, start_response):
    log.warning("app log line %s", environ["QUERY_STRING"])
    environ["wsgi.errors"].write("wsgi.errors line %s\n" % environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged"]


def log_large_route(environ, start_response):
    # A traceback-like entry over journald's datagram limit.
    lines = ["large entry %s" % environ["QUERY_STRING"]]
    lines += ['  File "app.py", line %d, in handler' % i for i in range(8500)]
    log.error("\n".join(lines))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged"]


_LEAKED = []


def leak_route(environ, start_response):
    """Keeps N MB for good on every call: a leaking app."""
    mb = int(environ["QUERY_STRING"] or 10)
    _LEAKED.append(bytearray(b"x" * (mb << 20)))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(_LEAKED)).encode()]


def print_route(environ, start_response):
    print("printed by the app", environ["QUERY_STRING"], flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"printed"]


def sleep_route(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or 1))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


def sleep_logged_route(environ, start_response):
    """As /sleep, saying first that it sleeps (a test waits for that)."""
    log.warning("sleeping %s", environ["QUERY_STRING"])
    return sleep_route(environ, start_response)


def sleep_noting_route(environ, start_response):
    """As /sleep-logged, and says how the sleep ended: a request timeout
    stops a greenlet with an exception, but not a thread."""
    log.warning("sleeping %s", environ["QUERY_STRING"])
    try:
        time.sleep(float(environ["QUERY_STRING"] or 1))
    except BaseException as e:
        log.warning("sleep interrupted by %s", type(e).__name__)
        raise
    log.warning("sleep ended")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


def stall_route(environ, start_response):
    """Sends its head and a first chunk, then stalls for N seconds."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first chunk\n"
        log.warning("stalling %s", environ["QUERY_STRING"])
        time.sleep(float(environ["QUERY_STRING"] or 10))
        yield b"too late\n"

    return gen()


def spin_route(environ, start_response):
    end = time.time() + float(environ["QUERY_STRING"] or 10)
    while time.time() < end:
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"spun"]


def work_route(environ, start_response):
    """Busy for the given seconds of this thread's CPU time; answers the
    request's wall time and CPU time, and when it started and ended on the
    monotonic clock, in ms."""
    want = float(environ["QUERY_STRING"] or 0.05)
    wall0, cpu0 = time.monotonic(), time.thread_time()
    while time.thread_time() - cpu0 < want:
        pass
    wall1 = time.monotonic()
    wall, cpu = wall1 - wall0, time.thread_time() - cpu0
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%.1f %.1f %.3f %.3f" % (wall * 1000, cpu * 1000, wall0 * 1000, wall1 * 1000)]


def work_then_sleep_route(environ, start_response):
    """Busy for a while, then blocked for a while (seconds: 'busy,blocked')."""
    busy, blocked = (float(x) for x in environ["QUERY_STRING"].split(","))
    log.warning("busy then blocked %s", environ["QUERY_STRING"])
    cpu0 = time.thread_time()
    while time.thread_time() - cpu0 < busy:
        pass
    time.sleep(blocked)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"worked and slept"]


def import_pid_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(IMPORT_PID).encode()]


def osenv_route(environ, start_response):
    return _json(start_response, sorted(os.environ))


def pid_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def plain_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["REQUEST_METHOD"] == "POST":
        # wsgiref.validate insists on read(size).
        return [environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))]
    return [b"validated"]


def validated_stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (b"part%d" % i for i in range(5))


# What /keep left behind: the app may keep start_response or write past
# its request (odd, but allowed).
KEPT = []


def keep_route(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    KEPT[:] = [write] if environ["QUERY_STRING"] == "write" else [start_response]
    return [b"kept"]


def after_kept_route(environ, start_response):
    """Whether this request got the very object an earlier one kept."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    shared = any(obj is start_response or obj is write for obj in KEPT)
    return [b"shared" if shared else b"own"]


VALIDATED = {"/validated": validator(plain_app), "/validated-stream": validator(validated_stream)}

ROUTES = {
    "/environ": environ_route,
    "/environ-size": environ_size_route,
    "/read": read_route,
    "/stream": stream_route,
    "/lazy": lazy_route,
    "/write": write_route,
    "/exc-info": exc_info_route,
    "/exc-info-late": exc_info_late_route,
    "/error": error_route,
    "/crlf": crlf_route,
    "/cl-cut": cl_cut_route,
    "/short-body": short_body_route,
    "/raw-status": raw_status_route,
    "/broken-pipe": broken_pipe_route,
    "/big": big_route,
    "/start-then-raise": start_then_raise_route,
    "/generator-raise": generator_raise_route,
    "/start-twice": start_twice_route,
    "/str-body": str_body_route,
    "/two-readers": two_readers_route,
    "/no-cl": no_cl_route,
    "/hop": hop_route,
    "/status": status_route,
    "/close": close_route,
    "/close-slow": close_slow_route,
    "/answer-then-close": answer_then_close_route,
    "/file": file_route,
    "/log": log_route,
    "/leak": leak_route,
    "/log-large": log_large_route,
    "/sleep": sleep_route,
    "/sleep-noting": sleep_noting_route,
    "/stall": stall_route,
    "/sleep-logged": sleep_logged_route,
    "/print": print_route,
    "/spin": spin_route,
    "/work": work_route,
    "/work-then-sleep": work_then_sleep_route,
    "/pid": pid_route,
    "/osenv": osenv_route,
    "/import-pid": import_pid_route,
    "/keep": keep_route,
    "/after-kept": after_kept_route,
}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path in VALIDATED:
        return VALIDATED[path](environ, start_response)
    route = ROUTES.get(path) or (environ_route if path.startswith("/environ/") else None)
    if route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no route " + path.encode("latin-1")]
    return route(environ, start_response)


def make_app(greeting="hi", times=1):
    """A factory for `module:make_app('hello', times=2)`."""

    def factory_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(greeting * times).encode()]

    return factory_app


application = app
