"""An app whose import hangs while a flag file exists (a boot that never finishes)."""

import os
import time

FLAG = os.environ["HANG_FLAG"]
while os.path.exists(FLAG):
    time.sleep(0.05)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
