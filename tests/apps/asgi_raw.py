"""A hand-written ASGI 3 app for the corners: scope, body events, streaming,
disconnects, exceptions and lifespan."""

import asyncio
import json
import logging
import os
import time

log = logging.getLogger("asgi_raw")
STARTUP_DELAY = float(os.environ.get("ASGI_STARTUP_DELAY", "0"))


async def _text(send, body, status=200, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")] + list(headers)})
    await send({"type": "http.response.body", "body": body})


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _read_all(receive):
    chunks, events = [], 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None, events
        events += 1
        chunks.append(event["body"])
        if not event.get("more_body", False):
            return b"".join(chunks), events


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(STARTUP_DELAY)
            scope["state"]["greeting"] = "set at startup"
            log.warning("lifespan startup ran")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            log.warning("lifespan shutdown ran")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket(scope, receive, send):
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if path == "/ws/refuse":
        return await send({"type": "websocket.close", "code": 1008})
    subprotocol = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol,
                "headers": [(b"x-ws", b"yes")]})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            log.warning("ws disconnect %s", event["code"])
            return
        if event.get("text") == "close-me":
            return await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
        if event.get("text") == "scope":
            shown = {k: v for k, v in scope.items() if k in ("type", "scheme", "path", "subprotocols")}
            await send({"type": "websocket.send", "text": json.dumps(shown)})
            continue
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo:" + event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event["bytes"][::-1]})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    path = scope["path"][len(scope.get("root_path", "")):]
    query = scope["query_string"].decode()
    if path == "/":
        return await _text(send, b"hello asgi")
    if path.startswith("/scope"):
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state", "raw_path", "query_string")}
        shown["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        shown["raw_path"] = scope["raw_path"].decode("latin-1")
        shown["query_string"] = scope["query_string"].decode("latin-1")
        shown["state"] = dict(scope.get("state", {}))
        return await _text(send, json.dumps(shown).encode())
    if path == "/echo":
        body, events = await _read_all(receive)
        out = json.dumps({"len": len(body), "sum": sum(body) % 65536, "events": events}).encode()
        return await _text(send, out)
    if path == "/slow-echo":
        # Reads one event at a time with a pause: the client has to wait for room.
        total, events = 0, 0
        while True:
            event = await receive()
            events += 1
            total += len(event.get("body", b""))
            await asyncio.sleep(0.01)
            if not event.get("more_body", False):
                break
        return await _text(send, json.dumps({"len": total, "events": events}).encode())
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(100):
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        return await send({"type": "http.response.body", "body": b"", "more_body": False})
    if path == "/big-stream":
        # 32 MB in 64 KB pieces: far more than the stream's buffer, so send() must wait.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        piece = b"z" * 65536
        for _ in range(512):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/sleep":
        # Logged at the start, so a test knows the request is in flight.
        log.warning("sleeping %s", query or 1)
        await asyncio.sleep(float(query or 1))
        return await _text(send, b"slept")
    if path == "/sleep-noting":
        log.warning("sleeping %s", query or 1)
        try:
            await asyncio.sleep(float(query or 1))
        except BaseException as e:
            log.warning("sleep interrupted by %s", type(e).__name__)
            raise
        log.warning("sleep ended")
        return await _text(send, b"slept")
    if path == "/block":
        import time
        time.sleep(float(query or 10))  # blocks the loop: no other task runs
        return await _text(send, b"blocked")
    if path == "/error-before":
        raise RuntimeError("failed before the response")
    if path == "/error-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("failed after the response started")
    if path == "/no-response":
        return None
    if path == "/disconnect":
        # Answer nothing; report (in the log) when the client has gone.
        log.warning("waiting for the disconnect of %s", query)
        body, _ = await _read_all(receive)
        event = await receive()
        log.warning("saw %s for %s", event["type"], query)
        return
    if path == "/live-tasks":
        # Task objects still alive (finished ones the server kept count too).
        import gc
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Task))
        return await _text(send, str(alive).encode())
    if path == "/pid":
        return await _text(send, str(os.getpid()).encode())
    if path == "/work":
        # CPU work without awaiting: other requests queue up meanwhile.
        _spin(float(query or 0.001))
        return await _text(send, b"worked")
    if path == "/answer-then-work":
        # The whole response first, then CPU work in the same task.
        await _text(send, b"answered")
        _spin(float(query or 1))
        log.warning("work after the answer done")
        return
    if path == "/headers":
        return await _text(send, b"ok", headers=[(b"x-multi", b"a"), (b"x-multi", b"b"),
                                                  (b"connection", b"keep-alive")])
    return await _text(send, b"no route " + path.encode(), status=404)


async def no_lifespan(scope, receive, send):
    """An app that knows nothing of lifespan (it fails on the scope type)."""
    assert scope["type"] == "http", "only http"
    await _text(send, b"no lifespan here")


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _text(send, b"never")
