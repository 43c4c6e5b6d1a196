"""An app whose code on disk the tests change: its answer comes from version.txt
next to a copy of this file, and it refuses to import while BROKEN exists."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.exists(os.path.join(HERE, "BROKEN")):
    raise RuntimeError("this version of the app is broken")
with open(os.path.join(HERE, "version.txt")) as f:
    VERSION = f.read().strip()


def app(environ, start_response):
    body = ("%s %d" % (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
