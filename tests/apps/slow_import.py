"""An app that takes a while to import (readiness must wait for it)."""

import logging
import os
import time

time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "2")))


def app(environ, start_response):
    logging.getLogger("slow_import").warning("served %s", environ["PATH_INFO"])
    if environ["PATH_INFO"] == "/slow":
        time.sleep(2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finally"]
