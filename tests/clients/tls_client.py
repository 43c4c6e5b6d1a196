"""The TLS and HTTP/2 tests' client, run with the test virtualenv's Python
(httpx with h2, and h2 itself). Each command prints one JSON object.

  get URL [--ca F] [--cert F --key F] [--tls 1.2|1.3] [--http2]
  handshakes HOST PORT --ca F --until FILE
      new TLS connection per request until FILE exists; the server
      certificates seen in order, and the requests that failed
  streams URL [--ca F] --until FILE [--concurrency N] [--prior-knowledge]
      HTTP/2 requests, N at a time on shared connections, until FILE exists
  slow-stream HOST PORT --ca F
      one stream whose response the client never reads, then others
  idle HOST PORT N --ca F [--idle S]
      N keep-alive TLS connections answered once, idle together, then again
  raw HOST PORT PATH... [--ca F] [--header-bytes N] [--until-closed]
      the paths at once on one HTTP/2 connection: settings, statuses, times
      (and whether the server sent GOAWAY before it closed)
"""

import argparse
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time


def context(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    if getattr(args, "cert", None):
        ctx.load_cert_chain(args.cert, args.key)
    if getattr(args, "tls", None) == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif getattr(args, "tls", None) == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def get(args):
    import httpx
    ctx = context(args)
    if args.http2:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    try:
        with httpx.Client(verify=ctx, http2=args.http2, timeout=10) as c:
            r = c.get(args.url)
            try:
                body = r.json()
            except ValueError:
                body = r.text
            out = {"status": r.status_code, "http_version": r.http_version, "body": body}
    except Exception as e:  # the test reads what failed
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


def handshakes(args):
    ctx = context(args)
    seen, ok, failed, errors = [], 0, 0, []
    deadline = time.monotonic() + 120
    while not os.path.exists(args.until) and time.monotonic() < deadline:
        try:
            with socket.create_connection((args.host, args.port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    cert = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
                    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(data[:80])
            ok += 1
            if not seen or seen[-1] != cert:
                seen.append(cert)
        except Exception as e:
            failed += 1
            errors.append(f"{type(e).__name__}: {e}")
    print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5], "certs": seen}))


def streams(args):
    import httpx
    ctx = context(args)
    ok, failed, errors = [0], [0], []
    lock = threading.Lock()
    versions = set()
    deadline = time.monotonic() + 120

    def worker(client):
        while not os.path.exists(args.until) and time.monotonic() < deadline:
            try:
                r = client.get(args.url)
                good = r.status_code == 200
                versions.add(r.http_version)
            except Exception as e:
                good = False
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
            with lock:
                if good:
                    ok[0] += 1
                else:
                    failed[0] += 1

    with httpx.Client(verify=ctx, http1=not args.prior_knowledge, http2=True,
                      timeout=10) as client:
        threads = [threading.Thread(target=worker, args=(client,))
                   for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(json.dumps({"ok": ok[0], "failed": failed[0], "errors": errors[:5],
                      "versions": sorted(versions)}))


def slow_stream(args):
    """Stream 1 asks for a large response and is never read (its window
    stays shut); streams 3, 5, ... must still be answered."""
    import h2.config
    import h2.connection
    import h2.events
    ctx = context(args)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((args.host, args.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # The connection's window is the client's to give: large, so that only
    # stream 1's own window holds its data back.
    conn.increment_flow_control_window(2**30)
    s.sendall(conn.data_to_send())

    def request(path):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", path),
                                (":scheme", "https"), (":authority", "localhost")],
                          end_stream=True)
        s.sendall(conn.data_to_send())
        return sid

    blocked = request("/big?n=4000000")
    others = [request("/") for _ in range(5)]
    done, blocked_bytes = set(), 0
    deadline = time.monotonic() + 10
    while len(done) < len(others) and time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                if event.stream_id == blocked:
                    blocked_bytes += len(event.data)
                else:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id in others:
                done.add(event.stream_id)
        s.sendall(conn.data_to_send())
    print(json.dumps({"answered": len(done), "of": len(others),
                      "blocked_stream_bytes": blocked_bytes}))


def raw(args):
    """Requests for PATHS, all at once on one HTTP/2 connection (TLS with
    --ca, else cleartext by prior knowledge): the server's SETTINGS, and
    each stream's status (or how it was refused) and time."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    sock = socket.create_connection((args.host, args.port), timeout=15)
    if args.ca:
        ctx = context(args)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    settings, streams, started = {}, {}, time.monotonic()
    goaway = None
    for path in args.paths:
        sid = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "https" if args.ca else "http"),
                   (":authority", "localhost")]
        if args.header_bytes:
            headers.append(("x-big", "b" * args.header_bytes))
        conn.send_headers(sid, headers, end_stream=True)
        streams[sid] = {"path": path}
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 15
    # With --until-closed, read on until the server ends the connection.
    while time.monotonic() < deadline and (
            args.until_closed or any("end" not in v for v in streams.values())):
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # Frames after the server's GOAWAY (its closing PING): h2 takes
            # any GOAWAY as the connection's end.
            if conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                goaway = goaway if goaway is not None else 0
            break
        for e in events:
            if isinstance(e, h2.events.RemoteSettingsChanged):
                settings = {str(k.name if hasattr(k, "name") else k): v.new_value
                            for k, v in e.changed_settings.items()}
            elif isinstance(e, h2.events.ResponseReceived):
                streams[e.stream_id]["status"] = int(dict(e.headers)[b":status"])
            elif isinstance(e, h2.events.DataReceived):
                conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                streams[e.stream_id]["end"] = round(time.monotonic() - started, 3)
            elif isinstance(e, h2.events.StreamReset):
                streams[e.stream_id]["reset"] = int(e.error_code)
                streams[e.stream_id]["end"] = round(time.monotonic() - started, 3)
            elif isinstance(e, h2.events.ConnectionTerminated):
                goaway = int(e.error_code)
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            break
    print(json.dumps({"settings": settings, "streams": list(streams.values()),
                      "goaway": goaway}))


def idle(args):
    """N keep-alive TLS connections open at once, each answered once, left
    idle together, then each asked again."""
    ctx = context(args)
    conns, failed = [], 0
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"

    def answer(s):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                      if l.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += s.recv(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:40])

    for _ in range(args.n):
        s = ctx.wrap_socket(socket.create_connection((args.host, args.port), timeout=10),
                            server_hostname="localhost")
        s.sendall(request)
        answer(s)
        conns.append(s)
    time.sleep(args.idle)
    for s in conns:
        try:
            s.sendall(request)
            answer(s)
        except Exception:
            failed += 1
    print(json.dumps({"connections": len(conns), "failed_second": failed}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("url")
    g.add_argument("--ca")
    g.add_argument("--cert")
    g.add_argument("--key")
    g.add_argument("--tls")
    g.add_argument("--http2", action="store_true")
    h = sub.add_parser("handshakes")
    h.add_argument("host")
    h.add_argument("port", type=int)
    h.add_argument("--ca")
    h.add_argument("--until")
    st = sub.add_parser("streams")
    st.add_argument("url")
    st.add_argument("--ca")
    st.add_argument("--until")
    st.add_argument("--concurrency", type=int, default=8)
    st.add_argument("--prior-knowledge", action="store_true",
                    help="cleartext HTTP/2 without asking first (h2c)")
    sl = sub.add_parser("slow-stream")
    sl.add_argument("host")
    sl.add_argument("port", type=int)
    sl.add_argument("--ca")
    r = sub.add_parser("raw")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("paths", nargs="+")
    r.add_argument("--ca")
    r.add_argument("--header-bytes", type=int, default=0)
    r.add_argument("--until-closed", action="store_true")
    i = sub.add_parser("idle")
    i.add_argument("host")
    i.add_argument("port", type=int)
    i.add_argument("n", type=int)
    i.add_argument("--ca")
    i.add_argument("--idle", type=float, default=0.2)
    args = p.parse_args()
    {"get": get, "handshakes": handshakes, "streams": streams,
     "slow-stream": slow_stream, "raw": raw, "idle": idle}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
