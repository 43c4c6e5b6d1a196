"""A differential corpus of malformed and ambiguous requests, each followed
on the same connection by a probe request, sent to two servers running
tests/apps/echo.py (ferricorn and gunicorn) side by side.

For every case and server it records the statuses that came back, and
what the app saw (from $ECHO_LOG); it checks that no probe ever reached
the app inside another request (as its body, a header or a trailer) and
compares the two servers' outcomes: refused or served, probe served or not.

usage: corpus.py FERRICORN_PORT FERRICORN_LOG GUNICORN_PORT GUNICORN_LOG
Prints one JSON object.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from wire import exchange  # noqa: E402

# Where ferricorn answers differently from gunicorn on purpose.
DIFFERENCES = {
    # HTTP/1.2 to 1.9: gunicorn takes any 1.x; hyper parses only 1.0 and
    # 1.1, so ferricorn refuses the rest (RFC 9110 §2.5 lets a server).
    "version-1.2",
    "version-1.9",
    # A Content-Length past 2^62: gunicorn (Python integers) waits for that
    # much and reads the probe as body; ferricorn refuses it.
    "cl-huge",
}


def cases():
    """(name, bytes) pairs; `{n}` in a case stands for its number."""
    h = "Host: x\r\n"
    out = []

    def add(name, raw):
        out.append((name, raw))

    # Request lines.
    for name, line in [
        ("lowercase-method", "get /case-{n} HTTP/1.1"),
        ("long-method", "GETTTTTTTTTTTTTTTTTTTTTT /case-{n} HTTP/1.1"),
        ("short-method", "GE /case-{n} HTTP/1.1"),
        ("hash-method", "G#T /case-{n} HTTP/1.1"),
        ("colon-method", "GET: /case-{n} HTTP/1.1"),
        ("nul-method", "GET\0 /case-{n} HTTP/1.1"),
        ("double-space", "GET  /case-{n} HTTP/1.1"),
        ("tab-separator", "GET\t/case-{n} HTTP/1.1"),
        ("no-target", "GET HTTP/1.1"),
        ("space-in-target", "GET /case-{n} x HTTP/1.1"),
        ("asterisk-get", "GET * HTTP/1.1"),
        ("authority-get", "GET example.com:80 HTTP/1.1"),
        ("relative-target", "GET case-{n} HTTP/1.1"),
        ("non-ascii-target", "GET /case-{n}/\xe9 HTTP/1.1"),
        ("nul-target", "GET /case-{n}\0 HTTP/1.1"),
        ("del-target", "GET /case-{n}\x7f HTTP/1.1"),
        ("version-lower", "GET /case-{n} http/1.1"),
        ("version-1.2", "GET /case-{n} HTTP/1.2"),
        ("version-1.9", "GET /case-{n} HTTP/1.9"),
        ("version-2", "GET /case-{n} HTTP/2.0"),
        ("version-0.9", "GET /case-{n} HTTP/0.9"),
        ("version-long", "GET /case-{n} HTTP/11.1"),
        ("version-missing", "GET /case-{n}"),
        ("version-trailing-space", "GET /case-{n} HTTP/1.1 "),
        ("ftp-version", "GET /case-{n} FTP/1.1"),
        ("quotes-target", 'GET /case-{n}/"q"?a="b" HTTP/1.1'),
        ("fragment-target", "GET /case-{n}#frag HTTP/1.1"),
        ("absolute-target", "GET http://x/case-{n} HTTP/1.1"),
        ("options-asterisk", "OPTIONS * HTTP/1.1"),
        ("dash-method", "-X /case-{n} HTTP/1.1"),
    ]:
        add(name, line + "\r\n" + h + "\r\n")

    # Line ends and empty lines.
    add("bare-lf-request-line", "GET /case-{n} HTTP/1.1\n" + h + "\r\n")
    add("bare-lf-header", "GET /case-{n} HTTP/1.1\r\nHost: x\n\r\n")
    add("bare-lf-head-end", "GET /case-{n} HTTP/1.1\r\nHost: x\r\n\n")
    add("bare-cr-header", "GET /case-{n} HTTP/1.1\r\nHost: x\rX: y\r\n\r\n")
    add("one-leading-crlf", "\r\nGET /case-{n} HTTP/1.1\r\n" + h + "\r\n")
    add("two-leading-crlf", "\r\n\r\nGET /case-{n} HTTP/1.1\r\n" + h + "\r\n")
    add("leading-lf", "\nGET /case-{n} HTTP/1.1\r\n" + h + "\r\n")
    add("leading-space", " GET /case-{n} HTTP/1.1\r\n" + h + "\r\n")

    # Header fields.
    for name, field in [
        ("space-before-colon", "X-A : 1"),
        ("tab-before-colon", "X-A\t: 1"),
        ("empty-name", ": 1"),
        ("no-colon", "X-A 1"),
        ("nul-in-value", "X-A: 1\x002"),
        ("bel-in-value", "X-A: 1\x072"),
        ("del-in-value", "X-A: 1\x7f2"),
        ("vt-in-value", "X-A: 1\x0b2"),
        ("obs-fold", "X-A: 1\r\n 2"),
        ("obs-fold-tab", "X-A: 1\r\n\t2"),
        ("non-ascii-name", "X-\xe9: 1"),
        ("quote-in-name", 'X-"A": 1'),
        ("duplicate-host", "Host: y"),
        ("duplicate-content-type", "Content-Type: a\r\nContent-Type: b"),
        ("expect-unknown", "Expect: 200-ok"),
        ("obs-text-value", "X-A: caf\xe9"),
        ("underscore-name", "X_A: 1"),
        ("pipe-name", "X|A: 1"),
        ("empty-value", "X-A:"),
        ("whitespace-value", "X-A: \t 1 \t "),
    ]:
        add(name, "GET /case-{n} HTTP/1.1\r\n" + h + field + "\r\n\r\n")

    # Content-Length.
    for name, value in [
        ("cl-negative", "-1"),
        ("cl-plus", "+5"),
        ("cl-hex", "0x5"),
        ("cl-space-inside", "5 5"),
        ("cl-list", "5, 5"),
        ("cl-empty", ""),
        ("cl-letters", "five"),
        ("cl-underscore", "0_5"),
        ("cl-huge", "99999999999999999999999"),
        ("cl-leading-zeros", "005"),
        ("cl-float", "5.0"),
    ]:
        add(name, "POST /case-{n} HTTP/1.1\r\n" + h + "Content-Length: " + value + "\r\n\r\nhello")
    add("cl-twice-same", "POST /case-{n} HTTP/1.1\r\n" + h + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
    add("cl-twice-different", "POST /case-{n} HTTP/1.1\r\n" + h + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
    add("cl-and-te", "POST /case-{n} HTTP/1.1\r\n" + h + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    add("te-and-cl", "POST /case-{n} HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n")
    add("cl-smuggles-probe", "POST /case-{n} HTTP/1.1\r\n" + h + "Content-Length: 0\r\n\r\n")
    add("cl-body-holds-request", "POST /case-{n} HTTP/1.1\r\n" + h + "Content-Length: 35\r\n\r\nGET /inner-{n} HTTP/1.1\r\nHost: x\r\n\r\n")

    # Transfer-Encoding.
    body = "5\r\nhello\r\n0\r\n\r\n"
    for name, te in [
        ("te-chunked-twice-list", "chunked, chunked"),
        ("te-chunked-not-last", "chunked, identity"),
        ("te-gzip-only", "gzip"),
        ("te-identity-only", "identity"),
        ("te-unknown", "br"),
        ("te-unknown-before-chunked", "br, chunked"),
        ("te-xchunked", "xchunked"),
        ("te-chunked-space-inside", "chun ked"),
        ("te-tab-prefix", "\tchunked"),
        ("te-uppercase", "CHUNKED"),
        ("te-gzip-chunked", "gzip, chunked"),
        ("te-identity-chunked", "identity, chunked"),
        ("te-trailing-comma", "chunked,"),
        ("te-empty", ""),
    ]:
        add(name, "POST /case-{n} HTTP/1.1\r\n" + h + "Transfer-Encoding: " + te + "\r\n\r\n" + body)
    add("te-two-headers", "POST /case-{n} HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    add("te-http10", "POST /case-{n} HTTP/1.0\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n" + body)

    # Chunked bodies.
    for name, chunked in [
        ("chunk-size-trailing-space", "5 \r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-leading-space", " 5\r\nhello\r\n0\r\n\r\n"),
        ("last-chunk-trailing-space", "5\r\nhello\r\n0 \r\n\r\n"),
        ("chunk-size-minus", "-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-plus", "+5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-underscore", "0_5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-0x", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-empty", "\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-overflow", "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-17-digits", "000000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-bare-lf", "5\nhello\r\n0\r\n\r\n"),
        ("chunk-data-bare-lf", "5\r\nhello\n0\r\n\r\n"),
        ("chunk-data-too-long", "5\r\nhello!\r\n0\r\n\r\n"),
        ("chunk-data-too-short", "5\r\nhell\r\n0\r\n\r\n"),
        ("chunk-ext-ok", "5;a=b\r\nhello\r\n0\r\n\r\n"),
        ("chunk-ext-quoted", '5;a="b c"\r\nhello\r\n0\r\n\r\n'),
        ("chunk-ext-bare-cr", "5;a=b\rc\r\nhello\r\n0\r\n\r\n"),
        ("chunk-ext-nul", "5;a=\0\r\nhello\r\n0\r\n\r\n"),
        ("chunk-ext-ctl", "5;a\x01\r\nhello\r\n0\r\n\r\n"),
        ("chunk-ext-no-name", "5;\r\nhello\r\n0\r\n\r\n"),
        ("chunk-ext-open-quote", '5;a="b\r\nhello\r\n0\r\n\r\n'),
        ("last-chunk-bare-lf", "5\r\nhello\r\n0\r\n\n"),
        ("last-chunk-lf-then-request", "5\r\nhello\r\n0\r\n\nGET /inner-{n} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("missing-last-chunk-crlf", "5\r\nhello\r\n0\r\n"),
        ("uppercase-hex", "A\r\n0123456789\r\n0\r\n\r\n"),
        ("trailer-ok", "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
        ("trailer-content-length", "5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"),
        ("trailer-transfer-encoding", "5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("trailer-host", "5\r\nhello\r\n0\r\nHost: y\r\n\r\n"),
        ("trailer-bare-lf", "5\r\nhello\r\n0\r\nX-T: 1\n\r\n"),
        ("trailer-fold", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
        ("trailer-no-colon", "5\r\nhello\r\n0\r\nX-T\r\n\r\n"),
    ]:
        add(name, "POST /case-{n} HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n" + chunked)

    # Upgrades and CONNECT.
    add("upgrade-then-cl-te", "GET /case-{n} HTTP/1.1\r\n" + h + "Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        "POST /inner-{n} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    add("h2c-upgrade", "GET /case-{n} HTTP/1.1\r\n" + h + "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    add("connect", "CONNECT case-{n}.example:443 HTTP/1.1\r\nHost: case-{n}.example:443\r\n\r\n")
    return out


def run(port, log, cases):
    results = {}
    for n, (name, raw) in enumerate(cases):
        data = raw.replace("{n}", str(n)).encode("latin-1")
        data += ("GET /probe-%d HTTP/1.1\r\nHost: x\r\n\r\n" % n).encode()
        responses, closed = exchange("127.0.0.1", port, data)
        results[name] = {"n": n, "statuses": [r[0] for r in responses], "closed": closed}
    seen = []
    with open(log) as f:
        for line in f:
            seen.append(json.loads(line))
    return results, seen


def judge(results, seen):
    """Per case: (refused, probe served); and every smuggling found."""
    smuggled = []
    outcome = {}
    for name, r in results.items():
        n = r["n"]
        probe = "/probe-%d" % n
        inner = "/inner-%d" % n
        this_case = re.compile(r"case-%d(?!\d)" % n)
        this_probe = re.compile(r"/probe-%d(?!\d)" % n)
        mine = [s for s in seen if this_case.search(s["raw_uri"]) or s["raw_uri"] in (probe, inner)
                or this_case.search(json.dumps(s["headers"]))]
        for s in mine:
            text = s["body"] + json.dumps(s["headers"])
            if s["raw_uri"] != probe and this_probe.search(text):
                smuggled.append("%s: the probe reached the app inside %s" % (name, s["raw_uri"]))
            if s["raw_uri"] == inner:
                smuggled.append("%s: a request inside the first one's body reached the app" % name)
        first = r["statuses"][0] if r["statuses"] else None
        refused = first is None or first >= 400
        probe_served = any(s["raw_uri"] == probe for s in mine)
        outcome[name] = {"refused": refused, "probe_served": probe_served, "statuses": r["statuses"]}
        if refused and probe_served:
            smuggled.append("%s: refused, yet its probe was served" % name)
        if refused and len(r["statuses"]) > 1:
            smuggled.append("%s: answers after a refusal: %s" % (name, r["statuses"]))
    return outcome, smuggled


def main():
    f_port, f_log, g_port, g_log = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    corpus = cases()
    ours, ours_seen = run(f_port, f_log, corpus)
    theirs, theirs_seen = run(g_port, g_log, corpus)
    ours, ours_smuggled = judge(ours, ours_seen)
    theirs, theirs_smuggled = judge(theirs, theirs_seen)
    differ = []
    for name, _ in corpus:
        a, b = ours[name], theirs[name]
        if (a["refused"], a["probe_served"]) != (b["refused"], b["probe_served"]):
            differ.append({"case": name, "ferricorn": a, "gunicorn": b, "documented": name in DIFFERENCES})
    print(json.dumps({
        "cases": len(corpus),
        "refused_by_ferricorn": sum(o["refused"] for o in ours.values()),
        "refused_by_gunicorn": sum(o["refused"] for o in theirs.values()),
        "smuggled_ferricorn": ours_smuggled,
        "smuggled_gunicorn": theirs_smuggled,
        "differences": differ,
    }, indent=1))


if __name__ == "__main__":
    main()
