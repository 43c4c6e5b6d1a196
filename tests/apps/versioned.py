"""An app whose answer comes from a file next to it, so tests can change the code on disk."""

import os

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as f:
    VERSION = f.read().strip()


def app(environ, start_response):
    body = ("%s %d" % (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
