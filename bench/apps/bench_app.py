"""The benchmark apps: the same WSGI callables for every server."""

import time

HELLO = b"Hello, World!"
TEN_KB = b"x" * 10240


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def tenkb(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10240")])
    return [TEN_KB]


def echo(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    chunk = b"y" * 100
    return (chunk for _ in range(100))


def sleepy(environ, start_response):
    time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


async def asgi_hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": HELLO})
