"""An app that starts a thread when imported, as many do (metrics
exporters, connection pools): under --preload it must not run in the
master, whose forks assume a single thread."""

import os
import threading
import time

IMPORT_PID = os.getpid()
_stop = threading.Event()
threading.Thread(target=lambda: _stop.wait(3600), daemon=True).start()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/import-pid":
        return [str(IMPORT_PID).encode()]
    return [str(os.getpid()).encode()]
