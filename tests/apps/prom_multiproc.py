"""prometheus_client in multiprocess mode, as gunicorn users run it: each
worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR, any worker
serves /metrics for all of them, and the config's child_exit hook marks a
dead worker's files (gunicorn.conf.py next to this file)."""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

REQUESTS = Counter("app_requests", "Requests the app answered", ["path"])
LIVE = Gauge("app_workers_live", "Workers alive", multiprocess_mode="livesum")
LIVE.set(1)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [generate_latest(registry)]
    REQUESTS.labels(environ["PATH_INFO"]).inc()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
