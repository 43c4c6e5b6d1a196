"""Python-side helpers of a ferricorn worker: app loading, logging, wsgi.errors.

Runs once per worker at boot; nothing here is on the request path.
"""

import ast
import importlib
import logging
import sys
import traceback


class AppImportError(Exception):
    """The app spec names something that is not there (gunicorn's wording)."""


def _literal_args(call):
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return args, kwargs


def load_app(spec):
    """Import `module:callable`, `module:factory(args)` or `module` (-> application)."""
    module, _, obj = spec.partition(":")
    obj = obj or "application"
    try:
        expr = ast.parse(obj.strip(), mode="eval").body
    except SyntaxError:
        raise AppImportError("Failed to parse %r as an attribute name or function call." % obj)
    if isinstance(expr, ast.Name):
        name, call = expr.id, None
    elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        name, call = expr.func.id, expr
    else:
        raise AppImportError("Failed to parse %r as an attribute name or function call." % obj)

    mod = importlib.import_module(module)
    try:
        app = getattr(mod, name)
    except AttributeError:
        raise AppImportError("Failed to find attribute %r in %r." % (name, module))
    if call is not None:
        try:
            args, kwargs = _literal_args(call)
        except ValueError:
            raise AppImportError("Failed to parse arguments of %r: only literals are allowed." % obj)
        app = app(*args, **kwargs)
        if app is None:
            raise AppImportError("The function %r in %r returned None." % (name, module))
    if not callable(app):
        raise AppImportError("Application object %r in %r must be callable." % (name, module))
    return app


def patch_gevent():
    """gunicorn's gevent worker: patch the standard library before the app is imported.

    False when gevent is not installed.
    """
    try:
        from gevent import monkey
    except ImportError:
        return False
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    return True


def format_exception():
    return "".join(traceback.format_exc()).rstrip()


class _Handler(logging.Handler):
    def __init__(self, emit):
        super().__init__()
        self._emit = emit

    def emit(self, record):
        try:
            self._emit(record.levelno, self.format(record))
        except Exception:
            self.handleError(record)


def install_logging(emit):
    """Send the app's log records to ferricorn's error log, unless it configured its own."""
    root = logging.getLogger()
    if not root.handlers:
        handler = _Handler(emit)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)


class ErrorStream:
    """wsgi.errors: complete lines go to the error log with the worker's pid."""

    def __init__(self, emit, level=40):
        self._emit = emit
        self._level = level
        self._buf = ""

    def write(self, s):
        if isinstance(s, bytes):
            s = s.decode("utf-8", "replace")
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(self._level, line)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if self._buf:
            self._emit(self._level, self._buf)
            self._buf = ""

    def isatty(self):
        return False


def redirect_std(emit):
    """Under journald, print() and stray stderr writes become entries of this worker."""
    sys.stdout = ErrorStream(emit, 20)
    sys.stderr = ErrorStream(emit, 40)


class FileWrapper:
    """wsgi.file_wrapper: the server sends files with a fileno() without the GIL."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


HOOKS = (
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
    "worker_exit", "nworkers_changed", "on_exit", "ssl_context",
)


def read_gunicorn_config(path, names):
    """Run a gunicorn *.py config; return (plain settings as JSON, hook names)."""
    import json

    scope = {"__file__": path, "__name__": "__config__"}
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    exec(code, scope)
    settings = {}
    for name in names:
        if name in scope:
            value = scope[name]
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, (str, int, float, bool, list, dict)) and value is not None:
                settings[name] = value
    hooks = sorted(h for h in HOOKS if callable(scope.get(h)))
    return json.dumps({"settings": settings, "hooks": hooks})
