"""Answers every request with what it saw of it, as JSON: the vectors'
and the differential corpus's app. Also appends that line to the file
named by $ECHO_LOG, so a test can tell what reached the app even when the
client got no answer."""

import json
import os

LOG = os.environ.get("ECHO_LOG")


def app(environ, start_response):
    try:
        body = environ["wsgi.input"].read()
    except OSError:
        # A body the server refused: the server answers, not the app.
        raise
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append([key[5:].replace("_", "-"), value])
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value != "":
            headers.append([key.replace("_", "-"), value])
    seen = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ.get("RAW_URI", ""),
        "path": environ["PATH_INFO"],
        "script_name": environ.get("SCRIPT_NAME", ""),
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": sorted(headers),
        "body": body.decode("latin-1"),
    }
    data = json.dumps(seen, sort_keys=True).encode()
    if LOG:
        with open(LOG, "ab") as f:
            f.write(data + b"\n")
    # What a framework answers a CONNECT it does not tunnel.
    status = "405 Method Not Allowed" if seen["method"] == "CONNECT" else "200 OK"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
