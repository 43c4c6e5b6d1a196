"""What a request learned of its connection (TLS, HTTP version), as JSON,
for WSGI (`app`) and ASGI (`asgi_app`); `/big?n=N` answers N bytes and
`/slow?s=S` sleeps S seconds first (touching $SLOW_STARTED, when set, as it
begins)."""

import json
import os
import time

KEYS = ("wsgi.url_scheme", "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT",
        "HTTP_HOST", "RAW_URI", "PATH_INFO", "QUERY_STRING",
        "SSL_PROTOCOL", "SSL_CIPHER", "SSL_CLIENT_CERT", "SSL_CLIENT_S_DN")


def _query(qs):
    return dict(p.split("=", 1) for p in qs.split("&") if "=" in p)


def app(environ, start_response):
    q = _query(environ.get("QUERY_STRING", ""))
    path = environ["PATH_INFO"]
    if path == "/big":
        n = int(q.get("n", "1000000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        chunk = b"x" * 65536
        return (chunk[:min(len(chunk), n - i)] for i in range(0, n, len(chunk)))
    if path == "/slow":
        if os.environ.get("SLOW_STARTED"):
            open(os.environ["SLOW_STARTED"], "w").close()
        time.sleep(float(q.get("s", "1")))
    if path == "/upload":
        body = environ["wsgi.input"].read()
        out = json.dumps({"received": len(body)}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [out]
    seen = {k: environ.get(k) for k in KEYS}
    out = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    q = _query(scope["query_string"].decode())
    if scope["path"] == "/slow":
        import asyncio
        await asyncio.sleep(float(q.get("s", "1")))
    seen = {
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "path": scope["path"],
        "host": dict(scope["headers"]).get(b"host", b"").decode(),
        "tls": scope.get("extensions", {}).get("tls"),
    }
    out = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
