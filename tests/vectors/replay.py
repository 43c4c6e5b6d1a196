"""Replay gunicorn's request vectors (tests/requests of its source
distribution) against a running server whose app is tests/apps/echo.py.

Each vector is sent on a new connection whose write side is then shut.
A `valid` vector must be answered, request by request, with what its .py
file says the app must see (method, target, path, query, headers, body);
requests after one that closes the connection (HTTP/1.0 without
keep-alive, `Connection: close`, CONNECT) are not served, as on any HTTP
server. An `invalid` vector must be refused with a 4xx or 5xx answer and get
no other (one whose head the client cuts short gets none, as from gunicorn). Vectors whose .py changes gunicorn's settings are
counted apart (they test a setting, not the default).

Prints one JSON object: the counts and every failure.
usage: replay.py VECTORS_DIR HOST PORT [SETTINGS_JSON]
       replay.py VECTORS_DIR --list-settings

With SETTINGS_JSON (an object of gunicorn setting names and values) only
the vectors whose .py sets exactly those are replayed (the server must run
with the same settings); --list-settings prints each such set once, with
its vectors.
"""

import glob
import json
import os
import sys
import types
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from wire import exchange  # noqa: E402

from gunicorn.config import Config  # noqa: E402
from gunicorn.util import split_request_uri  # noqa: E402


# Where ferricorn's environ differs from gunicorn's on purpose, and why.
DIFFERENCES = {
    # urllib reads "example.com:443" as scheme "example.com", path "443",
    # and gunicorn gives that as PATH_INFO; an authority-form target has
    # no path, so ferricorn's PATH_INFO is empty (RAW_URI holds the target).
    ("valid/rfc9112_target_authority_connect_01", "path"),
    ("valid/rfc9112_target_authority_ipv6_01", "path"),
}


def uri(data):
    parts = split_request_uri(data)
    return {
        "raw": data,
        "path": parts.path or "",
        "query": parts.query or "",
        "fragment": parts.fragment or "",
    }


def load(py):
    mod = types.ModuleType("vector")
    mod.uri = uri
    mod.cfg = Config()
    with open(py) as f:
        exec(compile(f.read(), py, "exec"), mod.__dict__)
    default = Config()
    changed = {k: v.get() for k, v in mod.cfg.settings.items() if v.get() != default.settings[k].get()}
    return mod.request, changed


def raw_bytes(path):
    # As gunicorn's tests/treq.py reads a .http file.
    with open(path, "rb") as f:
        data = f.read()
    data = data.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\000").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i:i + 2] == b"\\x" and i + 3 < len(data):
            try:
                out.append(int(data[i + 2:i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(data[i])
        i += 1
    return bytes(out)


def closes(req):
    headers = {k.upper(): v for k, v in req["headers"]}
    conn = headers.get("CONNECTION", "").lower()
    if req["method"] == "CONNECT" or "close" in conn:
        return True
    return req["version"] < (1, 1) and "keep-alive" not in conn


def expected_headers(req, underscores):
    """The headers as the echo app reports them: through the environ's keys
    (repeats joined with a comma), back to names."""
    env = {}
    for name, value in req["headers"]:
        if "_" in name and not underscores:
            continue  # gunicorn's default header_map drops these; so do we
        if name in ("CONTENT-TYPE", "CONTENT-LENGTH"):
            key = name.replace("-", "_")
        else:
            key = "HTTP_" + name.replace("-", "_")
        env[key] = env[key] + "," + value if key in env else value
    return sorted([k[5:].replace("_", "-") if k.startswith("HTTP_") else k.replace("_", "-"), v]
                  for k, v in env.items())


def check_valid(name, data, expect, host, port, underscores):
    if not isinstance(expect, list):
        expect = [expect]
    served = []
    for req in expect:
        served.append(req)
        if closes(req):
            break
    responses, _ = exchange(host, port, data)
    problems = []
    if len(responses) != len(served):
        problems.append("%d responses for %d requests" % (len(responses), len(served)))
    for i, (req, resp) in enumerate(zip(served, responses)):
        status, _, body, complete = resp
        want_status = 405 if req["method"] == "CONNECT" else 200
        if status != want_status or not complete:
            problems.append("request %d: status %s (complete %s): %r" % (i, status, complete, body[:200]))
            continue
        seen = json.loads(body)
        want = {
            "method": req["method"],
            "raw_uri": req["uri"]["raw"],
            "path": urllib.parse.unquote(req["uri"]["path"], encoding="latin-1"),
            "query": req["uri"]["query"],
            "protocol": "HTTP/%d.%d" % req["version"],
            "headers": expected_headers(req, underscores),
            "body": req["body"] if isinstance(req["body"], str) else req["body"].decode("latin-1"),
        }
        for key, value in want.items():
            if seen[key] != value and (name, key) not in DIFFERENCES:
                problems.append("request %d: %s is %r, gunicorn's vector says %r" % (i, key, seen[key], value))
    return problems


def check_invalid(name, data, expect, host, port):
    responses, closed = exchange(host, port, data)
    problems = []
    statuses = [r[0] for r in responses]
    if any(st < 400 for st in statuses):
        problems.append("answered %s" % statuses)
    # A head cut short by the client's end gets no answer (nor from
    # gunicorn); anything else is refused with an error status.
    if expect.__name__ != "NoMoreData" and not statuses:
        problems.append("no answer: the request was dropped, not refused")
    if not closed:
        problems.append("connection left open")
    return problems, [r[0] for r in responses]


def list_settings(vectors):
    sets = {}
    for http in sorted(glob.glob(os.path.join(vectors, "*", "*.http"))):
        _, changed = load(http[:-5] + ".py")
        if changed:
            key = json.dumps(changed, sort_keys=True)
            name = os.path.basename(os.path.dirname(http)) + "/" + os.path.basename(http)[:-5]
            sets.setdefault(key, []).append(name)
    print(json.dumps([{"settings": json.loads(k), "vectors": v} for k, v in sorted(sets.items())], indent=1))


def main():
    if sys.argv[2] == "--list-settings":
        return list_settings(sys.argv[1])
    vectors, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wanted = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    report = {"valid": {"passed": 0, "failed": 0, "other_settings": 0},
              "invalid": {"passed": 0, "failed": 0, "other_settings": 0},
              "failures": [], "statuses": {}, "skipped": [], "documented_differences": 0}
    for kind in ("valid", "invalid"):
        for http in sorted(glob.glob(os.path.join(vectors, kind, "*.http"))):
            name = kind + "/" + os.path.basename(http)[:-5]
            expect, changed = load(http[:-5] + ".py")
            if changed != wanted:
                report[kind]["other_settings"] += 1
                report["skipped"].append("%s (%s)" % (name, ", ".join(changed) or "default"))
                continue
            data = raw_bytes(http)
            if kind == "valid":
                underscores = wanted.get("header_map") == "dangerous"
                problems = check_valid(name, data, expect, host, port, underscores)
                report["documented_differences"] += sum(1 for n, _ in DIFFERENCES if n == name)
            else:
                problems, statuses = check_invalid(name, data, expect, host, port)
                report["statuses"][name] = statuses
            if problems:
                report[kind]["failed"] += 1
                report["failures"].append({"vector": name, "problems": problems})
            else:
                report[kind]["passed"] += 1
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
