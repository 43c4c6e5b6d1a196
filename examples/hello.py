"""The bundled example: a plain WSGI app with a few routes.

    ferricorn --chdir examples hello:app
"""

import json
import os
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = b"Hello, World!"
        ctype = "text/plain"
    elif path == "/env":
        shown = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
        body = json.dumps(shown, indent=2, sort_keys=True).encode()
        ctype = "application/json"
    elif path == "/echo":
        body = environ["wsgi.input"].read()
        ctype = environ.get("CONTENT_TYPE") or "application/octet-stream"
    elif path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
        body = b"slept\n"
        ctype = "text/plain"
    elif path == "/pid":
        body = str(os.getpid()).encode()
        ctype = "text/plain"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
