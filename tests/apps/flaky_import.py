"""Imports while the file named by $FLAKY_FLAG is absent; fails (as an app
whose database is down at import) while it exists."""

import os

if os.path.exists(os.environ["FLAKY_FLAG"]):
    raise RuntimeError("the database is down (flag file present)")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
