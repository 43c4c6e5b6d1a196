"""A WSGI app that reports which Python serves it and where each module it
imports comes from (the wheel tests: the wheel's standard library, the
venv's site-packages). `/?import=a,b` imports those too."""

import importlib
import json
import sys
from urllib.parse import parse_qs

# The compiled modules a web stack loads: built in, or from lib-dynload.
MODULES = ["math", "_socket", "select", "zlib", "binascii", "_struct", "_json",
           "ssl", "hashlib", "ctypes", "sqlite3", "decimal", "lzma", "bz2", "uuid",
           "_datetime", "pyexpat", "unicodedata"]


def origin(name):
    module = importlib.import_module(name)
    return getattr(module, "__file__", None) or "built-in"


def app(environ, start_response):
    extra = parse_qs(environ.get("QUERY_STRING", "")).get("import", [""])[0]
    names = MODULES + [n for n in extra.split(",") if n]
    body = json.dumps({
        "version": "%d.%d.%d" % sys.version_info[:3],
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "modules": {n: origin(n) for n in names},
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
