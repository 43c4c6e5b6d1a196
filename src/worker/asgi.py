"""The asgi worker's Python half: an asyncio loop running one task per request.

Requests and wake-ups arrive from the I/O thread (Rust) through an eventfd
the loop reads. A task that must wait (body data not there yet, a client
reading slower than the app writes) awaits a future for the token Rust gave
it; Rust wakes the token when the wait is over.
"""

import asyncio
import sys
import traceback

INFO, WARNING, ERROR = 20, 30, 40


def new_loop(kind):
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError(
                    "--asgi-loop uvloop needs the uvloop package, which Python in %s cannot "
                    "import: install it there (pip install uvloop) or use --asgi-loop asyncio"
                    % sys.prefix
                ) from None
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


class Lifespan:
    """The app's lifespan protocol: startup before serving, shutdown after draining."""

    def __init__(self, loop, app, mode, log, state):
        self.loop = loop
        self.app = app
        self.mode = mode
        self.log = log
        self.state = state
        self.queue = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        self.supported = True
        self.task = None

    async def _main(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.queue.get, self._send)
        except BaseException:
            text = traceback.format_exc().rstrip()
            if not self.started.done() and self.mode == "auto":
                self.supported = False
                self.log(INFO, "ASGI 'lifespan' protocol appears unsupported.")
                self.started.set_result(True)
            else:
                self.log(ERROR, "Exception in 'lifespan' protocol\n" + text)
        finally:
            if not self.started.done():
                if self.mode == "auto":
                    self.supported = False
                    self.started.set_result(True)
                else:
                    self.log(ERROR, "The app returned before completing lifespan startup.")
                    self.started.set_result(False)
            if not self.stopped.done():
                self.stopped.set_result(None)

    async def _send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            if not self.started.done():
                self.started.set_result(True)
        elif kind == "lifespan.startup.failed":
            self.log(ERROR, "Application startup failed: %s" % message.get("message", ""))
            if not self.started.done():
                self.started.set_result(False)
        elif kind == "lifespan.shutdown.complete":
            if not self.stopped.done():
                self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self.log(ERROR, "Application shutdown failed: %s" % message.get("message", ""))
            if not self.stopped.done():
                self.stopped.set_result(None)

    async def startup(self):
        self.task = self.loop.create_task(self._main())
        await self.queue.put({"type": "lifespan.startup"})
        return await self.started

    async def shutdown(self):
        if not self.supported or self.task is None or self.task.done():
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.stopped
        self.log(INFO, "Application shutdown complete.")


def awaited_stack(task):
    """Where a task waits: each coroutine in its await chain at its current
    line (a task's own stack shows only the outermost one)."""
    lines = []
    coro = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        lines.extend(traceback.format_stack(frame, limit=1))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "Stack of the task (most recent call last):\n" + "".join(lines)


def serve(link, app, beat_interval, loop_kind, lifespan_mode, log):
    loop, loop_name = new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    log(INFO, "ASGI event loop: %s" % loop_name)
    waiting = {}
    tasks = set()
    state = {}

    def wait(token):
        fut = loop.create_future()
        waiting[token] = fut
        return fut

    # A complete response waits for the loop's next pass, so that one
    # wake-up of the I/O thread carries the responses of the whole pass.
    flush_held = link.flush_held
    call_soon = loop.call_soon

    async def run(exchange):
        scope = exchange.scope()
        scope["state"] = state.copy()

        async def receive():
            while True:
                event = exchange.receive()
                if type(event) is not int:
                    return event
                await wait(event)

        async def send(message):
            token = exchange.send(message)
            while token is not None:
                await wait(token)
                token = exchange.flush()

        try:
            await app(scope, receive, send)
        except BaseException:
            held = exchange.finish(traceback.format_exc().rstrip())
        else:
            held = exchange.finish()
        if held:
            call_soon(flush_held)

    def spawn(coro):
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    # --request-timeout: the task serving each request, by deadline id.
    running = {}

    def spawn_tracked(job):
        task = spawn(run(link.exchange(job)))
        key = job.id
        running[key] = task
        task.add_done_callback(lambda _: running.pop(key, None))

    def spawn_untracked(job):
        spawn(run(link.exchange(job)))

    start = spawn_tracked if link.timed else spawn_untracked

    def stop_task(expired):
        task = running.get(expired.id)
        if task is None or task.done():
            link.timed_out(expired, "it had finished")
            return
        link.timed_out(expired, "cancelling its task", awaited_stack(task))
        task.cancel()

    lifespan = None if lifespan_mode == "off" else Lifespan(loop, app, lifespan_mode, log, state)

    async def stop():
        try:
            if lifespan is not None:
                await lifespan.shutdown()
        finally:
            link.stopped()

    def on_ready():
        jobs, woken, expired, stop_now = link.drain()
        for job in jobs:
            start(job)
        for token in woken:
            fut = waiting.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        for each in expired:
            stop_task(each)
        if stop_now:
            spawn(stop())

    async def heartbeat():
        # The master hears from this worker only while the loop gets to run.
        while True:
            link.beat()
            await asyncio.sleep(beat_interval)

    if lifespan is not None:
        log(INFO, "Waiting for application startup.")
        if not loop.run_until_complete(lifespan.startup()):
            link.started(False)
            return
        if lifespan.supported:
            log(INFO, "Application startup complete.")
    loop.add_reader(link.fileno(), on_ready)
    spawn(heartbeat())
    link.started(True)
    loop.run_forever()
