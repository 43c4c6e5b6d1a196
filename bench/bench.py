"""Start each server in turn on the same app, load it with wrk, stop it, and
print one table per scenario with ratios against granian and gunicorn from
the same run. Only loopback is loaded; every run is bounded in time."""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "bench", "apps")
WORKERS = 2


LOADGEN = os.path.join(ROOT, "target", "loadgen", "release", "loadgen")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(venv, threads, fc, baseline=None):
    gu = os.path.join(venv, "bin", "gunicorn")
    gr = os.path.join(venv, "bin", "granian")
    hh = os.path.join(ROOT, "target", "hyper-hello", "release", "hyper-hello")
    # ferricorn embeds Python: it runs the app from the same virtualenv the others use.
    common_fc = lambda port: [fc, "-w", str(WORKERS), "-b", "127.0.0.1:%d" % port, "--chdir", APPS,
                              "--virtualenv", venv]
    common_gu = lambda port: [gu, "-w", str(WORKERS), "-b", "127.0.0.1:%d" % port, "--chdir", APPS]
    # Another build of ferricorn (--baseline), for a before/after ratio in one run.
    common_base = lambda port: [baseline] + common_fc(port)[1:]
    return {
        "ferricorn sync (baseline)": lambda app, port: common_base(port) + ["-k", "sync", app],
        "ferricorn gthread (baseline)": lambda app, port: common_base(port) + ["-k", "gthread", "--threads",
                                                                              str(threads), app],
        "ferricorn sync": lambda app, port: common_fc(port) + ["-k", "sync", app],
        "ferricorn gthread": lambda app, port: common_fc(port) + ["-k", "gthread", "--threads", str(threads), app],
        # Every request counted for /metrics (a scrape is not part of the load).
        "ferricorn gthread, metrics": lambda app, port: common_fc(port) + [
            "-k", "gthread", "--threads", str(threads), "--metrics-bind", "unix:/tmp/ferricorn-bench-metrics-%d.sock" % port, app],
        # Every request logged (to /dev/null: the cost of formatting and writing, not of a disk).
        "ferricorn gthread, access log": lambda app, port: common_fc(port) + [
            "-k", "gthread", "--threads", str(threads), "--access-logfile", "/dev/null", app],
        "ferricorn gthread, access log (baseline)": lambda app, port: common_base(port) + [
            "-k", "gthread", "--threads", str(threads), "--access-logfile", "/dev/null", app],
        "gunicorn gthread, access log": lambda app, port: common_gu(port) + [
            "-k", "gthread", "--threads", str(threads), "--access-logfile", "/dev/null", app],
        "ferricorn asgi": lambda app, port: common_fc(port) + ["-k", "asgi", app],
        "ferricorn asgi (baseline)": lambda app, port: common_base(port) + ["-k", "asgi", app],
        "gunicorn asgi": lambda app, port: common_gu(port) + ["-k", "asgi", app],
        "uvicorn": lambda app, port: [os.path.join(venv, "bin", "uvicorn"), "--workers", str(WORKERS), "--host",
                                      "127.0.0.1", "--port", str(port), "--app-dir", APPS, "--loop", "uvloop",
                                      "--log-level", "warning", "--no-access-log", app],
        "uvicorn (asyncio)": lambda app, port: [os.path.join(venv, "bin", "uvicorn"), "--workers", str(WORKERS),
                                                "--host", "127.0.0.1", "--port", str(port), "--app-dir", APPS,
                                                "--loop", "asyncio", "--log-level", "warning", "--no-access-log",
                                                app],
        "granian asgi": lambda app, port: [gr, "--interface", "asgi", "--workers", str(WORKERS), "--host",
                                           "127.0.0.1", "--port", str(port), "--working-dir", APPS,
                                           "--log-level", "warning", app],
        "ferricorn gevent": lambda app, port: common_fc(port) + ["-k", "gevent", "--worker-connections", "1000", app],
        "ferricorn gevent (baseline)": lambda app, port: common_base(port) + [
            "-k", "gevent", "--worker-connections", "1000", app],
        "gunicorn sync": lambda app, port: common_gu(port) + ["-k", "sync", app],
        "gunicorn gthread": lambda app, port: common_gu(port) + ["-k", "gthread", "--threads", str(threads), app],
        "gunicorn gevent": lambda app, port: common_gu(port) + ["-k", "gevent", "--worker-connections", "1000", app],
        "granian": lambda app, port: [gr, "--interface", "wsgi", "--workers", str(WORKERS), "--blocking-threads",
                                      str(threads), "--host", "127.0.0.1", "--port", str(port),
                                      "--working-dir", APPS, "--log-level", "warning", app],
        "hyper (ceiling)": lambda app, port: [hh, "127.0.0.1:%d" % port, str(WORKERS)],
    }


def unix_argv(argv, port, path):
    """The same server bound to a unix socket instead of 127.0.0.1:port."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "127.0.0.1:%d" % port:
            out.append("unix:" + path)  # ferricorn's and gunicorn's -b, hyper-hello's address
        elif a == "--host" and argv[i + 2:i + 4] == ["--port", str(port)]:
            out += ["--uds", path]  # granian, uvicorn
            i += 4
            continue
        else:
            out.append(a)
        i += 1
    return out


def with_args(argv, extra):
    """Server options before the app (the last argument)."""
    return argv[:-1] + extra + argv[-1:] if extra else argv


# Idle connections must outlive the measurement: each server's keep-alive timeout.
# and room for them all (worker_connections is per worker).
HOLD_ARGS = {"ferricorn": ["--keep-alive", "60", "--worker-connections", "10000"],
             "gunicorn": ["--keep-alive", "60", "--worker-connections", "10000"]}


FOUR_WORKERS = {"ferricorn": ["-w", "4"], "gunicorn": ["-w", "4"], "granian": ["--workers", "4"]}


class Certs:
    """A self-signed certificate for localhost, made once per run with openssl."""
    dir = None

    @classmethod
    def paths(cls):
        if cls.dir is None:
            cls.dir = tempfile.mkdtemp(prefix="ferricorn-bench-tls-")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", os.path.join(cls.dir, "key.pem"), "-out",
                            os.path.join(cls.dir, "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           check=True, capture_output=True)
        return os.path.join(cls.dir, "cert.pem"), os.path.join(cls.dir, "key.pem")


def tls_args(server):
    """Each server's TLS options, for the same certificate and key."""
    cert, key = Certs.paths()
    if server == "granian":
        return ["--ssl-certificate", cert, "--ssl-keyfile", key]
    return ["--certfile", cert, "--keyfile", key]


# HTTP/2 offered by ALPN (granian offers it by default).
H2_ARGS = {"ferricorn": ["--http-protocols", "h2,h1"], "gunicorn": ["--http-protocols", "h2,h1"]}


ASGI_SERVERS = ["ferricorn asgi", "gunicorn asgi", "uvicorn", "uvicorn (asyncio)", "granian asgi"]
ASGI_BASES = ("granian asgi", "uvicorn")

SCENARIOS = [
    # name, app, path, wrk extra args, connections, servers, threads[, (ratio bases)]
    ("plain hello (13 B)", "bench_app:hello", "/", [], 64,
     ["ferricorn sync", "ferricorn gthread", "ferricorn gthread, metrics", "ferricorn gevent", "gunicorn sync",
      "gunicorn gthread", "gunicorn gevent", "granian", "hyper (ceiling)"], 4),
    # What a proxy without upstream keep-alive sends (nginx's default).
    ("plain hello, a new connection per request", "bench_app:hello", "/", ["-H", "Connection: close"], 64,
     ["ferricorn sync", "ferricorn gthread", "gunicorn sync", "gunicorn gthread", "granian", "hyper (ceiling)"], 4,
     ("hyper (ceiling)", "granian")),
    ("plain hello, access log", "bench_app:hello", "/", [], 64,
     ["ferricorn gthread, access log", "gunicorn gthread, access log", "granian"], 4,
     ("granian", "gunicorn gthread, access log")),
    ("10 KB response", "bench_app:tenkb", "/", [], 64,
     ["ferricorn sync", "ferricorn gthread", "gunicorn sync", "gunicorn gthread", "gunicorn gevent", "granian"], 4),
    ("1 MB POST echoed", "bench_app:echo", "/", ["-s", os.path.join(APPS, "post1mb.lua")], 16,
     ["ferricorn sync", "ferricorn gthread", "gunicorn sync", "gunicorn gthread", "gunicorn gevent", "granian"], 4),
    ("streamed in 100 chunks", "bench_app:stream", "/", [], 64,
     ["ferricorn sync", "ferricorn gthread", "gunicorn sync", "gunicorn gthread", "gunicorn gevent", "granian"], 4),
    ("Flask hello", "bench_flask:app", "/", [], 64,
     ["ferricorn sync", "ferricorn gthread", "ferricorn gevent", "gunicorn sync", "gunicorn gthread",
      "gunicorn gevent", "granian"], 4),
    ("slow I/O: 10 ms sleep, 256 connections", "bench_app:sleepy", "/", [], 256,
     ["ferricorn gthread", "ferricorn gevent", "gunicorn gthread", "gunicorn gevent", "granian"], 128),
    # A new connection per request without wrk: over a unix socket (nginx's usual upstream) and TCP.
    ("plain hello, a new connection per request, unix socket", "bench_app:hello", "/",
     {"load": "close", "unix": True}, 64,
     ["ferricorn sync", "ferricorn gthread", "gunicorn gthread", "granian", "hyper (ceiling)"], 4,
     ("hyper (ceiling)", "granian")),
    ("Flask hello, a new connection per request", "bench_flask:app", "/", {"load": "close"}, 64,
     ["ferricorn sync", "ferricorn gthread", "gunicorn gthread", "granian"], 4),
    ("Flask hello, a new connection per request, unix socket", "bench_flask:app", "/",
     {"load": "close", "unix": True}, 64,
     ["ferricorn sync", "ferricorn gthread", "gunicorn gthread", "granian"], 4),
    # Start-up with 4 workers: the "ready s" (first answer) and "READY=1 s" columns.
    ("plain hello, 4 workers", "bench_app:hello", "/", {"load": "wrk", "args": FOUR_WORKERS}, 64,
     ["ferricorn gthread", "gunicorn gthread", "granian"], 4),
    ("Flask hello, 4 workers", "bench_flask:app", "/", {"load": "wrk", "args": FOUR_WORKERS}, 64,
     ["ferricorn gthread", "gunicorn gthread", "granian"], 4),
    # Memory per idle keep-alive connection: connections held open at once.
    ("idle keep-alive connections", "bench_app:hello", "/", {"load": "hold", "args": HOLD_ARGS, "asgi_app": "bench_app:asgi_hello"}, 10000,
     ["ferricorn gthread", "ferricorn gevent", "ferricorn asgi", "gunicorn gthread", "gunicorn gevent", "granian",
      "granian asgi"], 4),
    # Slow clients (slowloris) on the workers while normal clients are timed.
    ("1,000 slow clients, normal clients timed", "bench_app:hello", "/", {"load": "slow", "slow": 1000, "asgi_app": "bench_app:asgi_hello"}, 16,
     ["ferricorn gthread", "ferricorn gevent", "ferricorn asgi", "gunicorn gthread", "granian"], 4),
    # TLS terminated by the server itself: HTTPS over HTTP/1.1 (wrk), and HTTP/2 by ALPN (h2load: 16
    # connections, 10 streams each at a time).
    ("HTTPS hello, keep-alive", "bench_app:hello", "/", {"load": "wrk", "tls": True}, 64,
     ["ferricorn gthread", "gunicorn gthread", "granian"], 4),
    ("HTTP/2 hello over TLS (p50: the mean, p99: the slowest)", "bench_app:hello", "/", {"load": "h2load", "tls": True, "args": H2_ARGS}, 16,
     ["ferricorn gthread", "gunicorn gthread", "granian"], 4),
    ("ASGI hello", "bench_app:asgi_hello", "/", [], 64, ASGI_SERVERS, 4, ASGI_BASES),
    ("ASGI hello, a new connection per request", "bench_app:asgi_hello", "/", {"load": "close"}, 64,
     ASGI_SERVERS, 4, ASGI_BASES),
    ("FastAPI hello", "bench_fastapi:app", "/", [], 64, ASGI_SERVERS, 4, ASGI_BASES),
]


def tree_rss_kb(pid):
    """Resident memory of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total


def tree_cpu_seconds(pid):
    """User + system CPU time of a process tree so far (all threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # After the command name: field 3 (state) is [0], so utime (14) and stime (15) are [11], [12].
            total += int(fields[11]) + int(fields[12])
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def wait_ready(port, deadline, unix=None, tls=False):
    import ssl
    unverified = ssl._create_unverified_context()
    while time.time() < deadline:
        try:
            if unix:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(2)
                    s.connect(unix)
                    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return True
            else:
                url = "%s://127.0.0.1:%d/" % ("https" if tls else "http", port)
                with urllib.request.urlopen(url, timeout=2, context=unverified if tls else None) as r:
                    if r.status == 200:
                        return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


def run_loadgen(args, duration):
    """bench/loadgen's one JSON line."""
    out = subprocess.run([LOADGEN] + args, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError("loadgen %s: %s" % (" ".join(args), out.stderr.strip()))
    return json.loads(out.stdout.strip().splitlines()[-1])


class ReadyListener:
    """A `$NOTIFY_SOCKET` of our own, so that ferricorn's `READY=1` (sent once
    its workers accept) is timed like systemd would see it. Closed after the
    first READY=1: later STATUS= lines then fail on ferricorn's side, which
    it ignores."""

    def __init__(self, t0):
        self.dir = tempfile.mkdtemp(prefix="ferricorn-bench-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.t0, self.at = t0, None
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self):
        deadline = self.t0 + 60
        while time.time() < deadline:
            try:
                msg = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return  # closed: READY=1 never came
            if b"READY=1" in msg.split(b"\n"):
                self.at = time.time() - self.t0
                return

    def close(self):
        """Seconds from start to READY=1, or None if it never came."""
        self.thread.join(timeout=5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)
        return self.at


def parse_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def run_wrk(port, path, extra, conns, duration, scheme="http"):
    cmd = ["wrk", "-t2", "-c%d" % conns, "-d%ds" % duration, "--latency", "--timeout", "10s"] + extra + [
        "%s://127.0.0.1:%d%s" % (scheme, port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # Anchored: "+/- Stdev" columns such as "75.50%" also end in "50%".
    p50 = parse_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        # wrk counts a server closing the connection after a Connection: close
        # response as a read error; only count connect/write/timeout errors.
        errors += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return rps, p50, p99, errors


def run_h2load(port, path, conns, requests, limit):
    """HTTP/2 over TLS: h2load's req/s and failures (it gives no percentiles:
    the mean is in the p50 column, the max in p99's). A count of requests,
    not a duration: h2load 1.52's -D trips over a libev assertion when it
    stops its clients."""
    cmd = ["h2load", "-t2", "-c%d" % conns, "-m10", "-n%d" % requests, "-N5",
           "https://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 60).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", out)
    errors = sum(int(g) for g in m.groups()) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        errors += int(m.group(3)) + int(m.group(4))
    # HTTP/1.1 by ALPN would be a different benchmark: count it as failure.
    if "h2" not in (re.search(r"Application protocol: (\S+)", out) or [None, ""])[1]:
        errors += 1
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    mean, top = (parse_ms(t.group(3)), parse_ms(t.group(2))) if t else (float("nan"), float("nan"))
    return rps, mean, top, errors


class Server:
    """One server of a scenario, kept running while the others are measured:
    idle, it costs the machine nothing.

    It gets a process group of its own (to stop its whole tree), but stays in
    our session: with the kernel's autogroup scheduling every session is a
    group of its own that gets an equal share of the CPUs, and a server in
    another session than wrk (which shares its two cores) made every server
    here pay 1.5-1.8 times the CPU per request in scheduling."""

    def __init__(self, name, argv, scenario, smoke=False):
        self.name, self.scenario = name, scenario
        app, path, extra = scenario[1:4]
        self.port = free_port()
        self.shape = extra if isinstance(extra, dict) else None
        self.unix = None
        self.smoke = smoke
        if self.shape:
            if "asgi" in name and "asgi_app" in self.shape:
                app = self.shape["asgi_app"]
            server_args = self.shape.get("args", {}).get(name.split()[0], [])
            if self.shape.get("tls"):
                server_args = server_args + tls_args(name.split()[0])
            build = argv
            argv = lambda a, p: with_args(build(a, p), server_args)
            if self.shape.get("unix"):
                self.unix = "/tmp/ferricorn-bench-%d.sock" % self.port
                tcp = argv
                argv = lambda a, p: unix_argv(tcp(a, p), p, self.unix)
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        t0 = time.time()
        # Only ferricorn speaks sd_notify; the others get no socket to send to.
        listener = ReadyListener(t0) if name.startswith("ferricorn") else None
        if listener:
            env["NOTIFY_SOCKET"] = listener.path
        self.proc = subprocess.Popen(argv(app, self.port), cwd=APPS, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, process_group=0)
        self.tls = bool(self.shape and self.shape.get("tls"))
        self.ready = time.time() - t0 if wait_ready(self.port, time.time() + 60, self.unix, self.tls) else None
        self.notified = listener.close() if listener else None
        if self.ready is not None:
            # Warm up once: imports, caches, the allocator's arenas. A load
            # tool that fails here must not leave the server running: the
            # caller has not got it yet to stop.
            try:
                if self.shape and self.shape["load"] in ("hold", "slow"):
                    run_loadgen(["close", self.target(), "16", "1"], 1)
                else:
                    self.run_wrk(1)
            except BaseException:
                self.stop()
                raise
        self.rss_idle = tree_rss_kb(self.proc.pid)

    def target(self):
        return "unix:" + self.unix if self.unix else "tcp:127.0.0.1:%d" % self.port

    def run_wrk(self, duration):
        path, extra, conns = self.scenario[2:5]
        if self.shape is None or self.shape["load"] == "wrk":
            return run_wrk(self.port, path, extra if self.shape is None else [], conns, duration,
                           "https" if self.tls else "http")
        if self.shape["load"] == "h2load":
            # As many requests as the last run's rate fills the slice with.
            requests = max(2000, int(getattr(self, "h2_rps", 0) * duration))
            r = run_h2load(self.port, path, conns, requests, duration * 10)
            self.h2_rps = r[0]
            return r
        if self.shape["load"] == "close":
            r = run_loadgen(["close", self.target(), str(conns), str(duration)], duration)
            return r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]
        if self.shape["load"] == "hold":
            return self.hold(conns // 10 if self.smoke else conns, duration)
        slow = self.shape["slow"] // 10 if self.smoke else self.shape["slow"]
        r = run_loadgen(["slow", self.target(), str(slow), str(conns), str(duration + 2)], duration + 2)
        self.extra_result = {"max": r["max_ms"], "slow_conns": r["slow_connections"]}
        return r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]

    def hold(self, conns, duration):
        """Open `conns` keep-alive connections, measure the server's memory
        with them held, then release them. Returns the run_wrk tuple with
        the memory in self.extra_result."""
        # Against the server's memory before it ever held them: what a
        # round frees stays in the allocator for the next one.
        rss0 = self.rss_idle
        gen = subprocess.Popen([LOADGEN, "hold", self.target(), str(conns), str(duration + 120)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            first = json.loads(gen.stdout.readline() or "{}")
            rss1 = tree_rss_kb(self.proc.pid)
            gen.stdin.close()
            last = json.loads(gen.stdout.readline() or "{}")
            gen.wait(timeout=60)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait()
        held = first.get("held", 0)
        self.extra_result = {"held": held, "still_open": last.get("still_open", 0),
                             "kb_per_conn": (rss1 - rss0) / held if held else float("nan")}
        return 0.0, float("nan"), float("nan"), conns - last.get("still_open", 0)

    def measure(self, duration):
        """One slice of load: req/s, latency, errors, and the server's CPU and memory."""
        if self.ready is None:
            return None
        self.extra_result = {}
        cpu0 = tree_cpu_seconds(self.proc.pid)
        rps, p50, p99, errors = self.run_wrk(duration)
        cpu = tree_cpu_seconds(self.proc.pid) - cpu0
        cpu_us = cpu * 1e6 / (rps * duration) if rps else float("nan")
        return dict({"rps": rps, "p50": p50, "p99": p99, "errors": errors,
                     "rss_mb": tree_rss_kb(self.proc.pid) / 1024, "ready": self.ready,
                     "notified": self.notified, "cpu_us": cpu_us}, **self.extra_result)

    def stop(self):
        """Stop what we started: the whole process group of this server, by its id."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=35)
        except Exception:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.unix and os.path.exists(self.unix):
            os.unlink(self.unix)


def ratio(a, b):
    return "%.2f×" % (a / b) if b else "–"


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def combine(rounds, more=()):
    """One row from a server's rounds: medians, except errors (summed) and RSS (the largest)."""
    if any(r is None for r in rounds):
        return None
    row = {k: median([r[k] for r in rounds]) for k in ("rps", "p50", "p99", "ready", "cpu_us") + tuple(more)}
    row["notified"] = rounds[0]["notified"]
    row["errors"] = sum(r["errors"] for r in rounds)
    row["rss_mb"] = max(r["rss_mb"] for r in rounds)
    return row


def lowest_ratio(rounds, base_rounds):
    """The worst of the per-round ratios: each round's servers ran back to back, so a
    round's ratio compares like with like even when the machine's load drifts."""
    if not rounds or not base_rounds or any(r is None for r in rounds + base_rounds):
        return 0
    return min(a["rps"] / b["rps"] for a, b in zip(rounds, base_rounds) if b["rps"])


def table(title, per_round, bases=("granian", "gunicorn gthread")):
    """per_round: server name -> list of results, one per round."""
    rounds = max((len(v) for v in per_round.values()), default=1)
    header = "| server | req/s | p50 ms | p99 ms | errors | RSS MB | ready s | READY=1 s | CPU µs/req | vs %s | vs %s |" % bases
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if rounds > 1:
        header += " vs %s, worst round |" % bases[0]
        sep += "---:|"
    lines = ["### %s" % title, "", header, sep]
    results = {name: combine(rs) for name, rs in per_round.items()}
    base_gr = (results.get(bases[0]) or {}).get("rps", 0)
    base_gu = (results.get(bases[1]) or {}).get("rps", 0)
    for name, r in results.items():
        if r is None:
            lines.append("| %s | failed to start |%s" % (name, " |" * (9 + (rounds > 1))))
            continue
        notified = "–" if r["notified"] is None else "%.2f" % r["notified"]
        line = "| %s | %.0f | %.2f | %.2f | %d | %.0f | %.2f | %s | %.1f | %s | %s |" % (
            name, r["rps"], r["p50"], r["p99"], r["errors"], r["rss_mb"], r["ready"], notified, r["cpu_us"],
            ratio(r["rps"], base_gr), ratio(r["rps"], base_gu))
        if rounds > 1:
            worst = lowest_ratio(per_round[name], per_round.get(bases[0], []))
            line += " %s |" % ("%.2f×" % worst if worst else "–")
        lines.append(line)
    return "\n".join(lines) + "\n"


def table_hold(title, per_round, bases=("granian", "gunicorn gthread")):
    """Memory per held keep-alive connection: RSS with them open minus before."""
    lines = ["### %s" % title, "",
             "| server | held | still open after | RSS MB | KB per connection | vs %s | vs %s |" % bases,
             "|---|---:|---:|---:|---:|---:|---:|"]
    results = {name: combine(rs, ("held", "still_open", "kb_per_conn")) for name, rs in per_round.items()}
    base = [(results.get(b) or {}).get("kb_per_conn", 0) for b in bases]
    for name, r in results.items():
        if r is None:
            lines.append("| %s | failed to start | | | | | |" % name)
            continue
        lines.append("| %s | %.0f | %.0f | %.0f | %.1f | %s | %s |" % (
            name, r["held"], r["still_open"], r["rss_mb"], r["kb_per_conn"],
            ratio(r["kb_per_conn"], base[0]), ratio(r["kb_per_conn"], base[1])))
    return "\n".join(lines) + "\n"


def table_slow(title, per_round):
    """The normal clients' latency while slow clients hold connections."""
    lines = ["### %s" % title, "",
             "| server | slow connections | normal req/s | p50 ms | p99 ms | max ms | failed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rs in per_round.items():
        r = combine(rs, ("max", "slow_conns"))
        if r is None:
            lines.append("| %s | failed to start | | | | | |" % name)
            continue
        lines.append("| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %d |" % (
            name, r["slow_conns"], r["rps"], r["p50"], r["p99"], r["max"], r["errors"]))
    return "\n".join(lines) + "\n"


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    py = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True).stdout.strip()
    return "%d cores, %s, Linux %s, %s" % (os.cpu_count(), cpu, platform.release(), py)


def versions(venv, fc):
    out = subprocess.run([os.path.join(venv, "bin", "pip"), "list", "--format=freeze"], capture_output=True,
                         text=True).stdout
    keep = [l for l in out.splitlines() if l.split("==")[0].lower() in ("gunicorn", "granian", "gevent", "flask",
                                                                     "uvicorn", "uvloop", "fastapi")]
    fc = subprocess.run([fc, "--version"], capture_output=True, text=True).stdout.strip()
    return ", ".join([fc] + keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--ferricorn", default=os.path.join(ROOT, "target", "release", "ferricorn"),
                    help="the ferricorn binary to run (default target/release/ferricorn)")
    ap.add_argument("--smoke", action="store_true", help="1 s per server and scenario; do not write docs")
    ap.add_argument("--duration", type=int, default=2, help="seconds per measured slice (default 2)")
    ap.add_argument("--only", help="run only scenarios whose name contains this")
    ap.add_argument("--servers", help="server names to run, separated by ';' (or by ',' when no name has "
                                      "a comma; default: each scenario's list)")
    ap.add_argument("--rounds", type=int, help="measure every server this many times, interleaved, and report "
                                               "medians (default 7, or 1 with --smoke)")
    ap.add_argument("--baseline", help="another ferricorn binary: its sync, gthread, gevent and asgi runs beside this one's, "
                                       "for a before/after ratio (use with --servers)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "benchmarks-results.md"))
    args = ap.parse_args()
    duration = 1 if args.smoke else args.duration
    rounds = args.rounds or (1 if args.smoke else 7)
    srv_by_threads = {}
    report = ["## Results", "",
              "Date: %s. Machine: %s." % (datetime.date.today().isoformat(), machine()), "",
              "Versions: %s." % versions(args.venv, args.ferricorn), "",
              "Command: `bench/run.sh%s`." % "".join(" " + (a if " " not in a else '"%s"' % a)
                                                     for a in sys.argv[1:] if not a.startswith("--venv")
                                                     and not a.startswith(args.venv)
                                                     and not a.startswith("--ferricorn")
                                                     and a != args.ferricorn), "",
              "Each server: %d workers, wrk -t2. All servers of a scenario are started first (one at a time, "
              "each warmed up for 1 s) and stay up; then %d round(s) in which every server is loaded for %d s in "
              "turn, each round in a different order, so that the machine's drift falls on all of them alike. "
              "The table gives each server's median over the rounds (RSS: the largest, errors: the sum). Errors "
              "are connect/write/timeout errors and non-2xx "
              "responses." % (WORKERS, rounds, duration), ""]
    for sc in SCENARIOS:
        if args.only and args.only not in sc[0]:
            continue
        threads = sc[6]
        srv = srv_by_threads.setdefault(threads, servers(args.venv, threads, args.ferricorn, args.baseline))
        listed = sc[5]
        if args.baseline:
            listed = listed + [n + " (baseline)" for n in listed if n + " (baseline)" in srv]
        wanted = args.servers and args.servers.split(";" if ";" in args.servers else ",")
        names = [n for n in listed if not wanted or n in [w.strip() for w in wanted]]
        if not names:
            # --servers names none of this scenario's servers.
            continue
        per_round = {name: [] for name in names}
        running = {}
        try:
            for name in names:
                print("bench: %s / starting %s ..." % (sc[0], name), file=sys.stderr, flush=True)
                running[name] = Server(name, srv[name], sc, args.smoke)
            for r in range(rounds):
                print("bench: %s / round %d of %d ..." % (sc[0], r + 1, rounds), file=sys.stderr, flush=True)
                # Rotate the order so that no server always runs first (or right after the heaviest one).
                for name in names[r % len(names):] + names[:r % len(names)]:
                    per_round[name].append(running[name].measure(duration))
        finally:
            for server in running.values():
                server.stop()
        load = sc[3].get("load") if isinstance(sc[3], dict) else None
        if load == "hold":
            t = table_hold("%s (%d)" % (sc[0], sc[4] // 10 if args.smoke else sc[4]), per_round, *sc[7:8])
        elif load == "slow":
            t = table_slow("%s (%d normal clients)" % (sc[0], sc[4]), per_round)
        else:
            t = table("%s (%d connections)" % (sc[0], sc[4]), per_round, *sc[7:8])
        print(t, flush=True)
        report.append(t)
    if not args.smoke:
        with open(args.out, "w") as f:
            f.write("\n".join(report))
        print("bench: wrote %s" % args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
