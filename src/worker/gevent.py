"""The gevent worker's Python half: the hub loop that runs each request in a greenlet.

The I/O thread (Rust) never touches Python. It queues requests and wake-ups
for parked greenlets, then makes an eventfd readable; a watcher on the hub
takes them. So the hub never blocks on Rust, and a greenlet waiting for body
data or for a slow client only parks itself.
"""

import traceback

import gevent
from gevent import get_hub, getcurrent, sleep, spawn_raw
from gevent.hub import Waiter


def serve(link, beat_interval):
    gevent.reinit()  # harmless without fork; needed if the hub existed before it (--preload)
    hub = get_hub()
    waiters = {}
    # A complete response waits until the hub has run what is runnable, so
    # that one wake-up of the I/O thread carries the responses of the pass.
    flush_held = link.flush_held
    run_callback = hub.loop.run_callback
    handle_job = link.handle

    def handle(job):
        if handle_job(job):
            run_callback(flush_held)

    # --request-timeout: the greenlet serving each request, by deadline id.
    running = {}
    timeout_error = link.timeout_error

    def tracked(job):
        running[job.id] = getcurrent()
        try:
            handle(job)
        finally:
            running.pop(job.id, None)

    run = tracked if link.timed else handle

    def stop(expired):
        greenlet = running.get(expired.id)
        if greenlet is None or greenlet.dead:
            link.timed_out(expired, "it had finished")
            return
        frame = greenlet.gr_frame
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        link.timed_out(
            expired,
            "killing its greenlet",
            "Stack of the greenlet (most recent call last):\n" + stack,
        )
        # Raised where the greenlet waits, once the hub gets to it.
        hub.loop.run_callback(greenlet.throw, timeout_error)

    def park(token):
        waiter = Waiter(hub)
        waiters[token] = waiter
        try:
            waiter.get()
        finally:
            waiters.pop(token, None)

    def on_ready():
        jobs, woken, expired, stopping = link.drain()
        for job in jobs:
            spawn_raw(run, job)
        for token in woken:
            waiter = waiters.pop(token, None)
            if waiter is not None:
                waiter.switch(None)
        for each in expired:
            stop(each)
        if stopping:
            link.stopped()

    def heartbeat():
        # The master hears from this worker only while the hub gets to run:
        # a greenlet that hogs the CPU past --timeout gets it replaced.
        while True:
            link.beat()
            sleep(beat_interval)

    link.set_park(park)
    watcher = hub.loop.io(link.fileno(), 1)
    watcher.start(on_ready)
    spawn_raw(heartbeat)
    link.started(True)
    hub.join()
