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


def apply_logconfig(dict_json, json_path, ini_path):
    """gunicorn's logconfig_dict, logconfig_json and logconfig, in that order of
    precedence, applied to the app's Python logging."""
    import json
    import logging.config

    if dict_json:
        logging.config.dictConfig(json.loads(dict_json))
    elif json_path:
        with open(json_path) as f:
            logging.config.dictConfig(json.load(f))
    elif ini_path:
        logging.config.fileConfig(ini_path, disable_existing_loggers=False)


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


# ---- Server hooks that run in a worker (gunicorn's names and arguments)

WORKER_HOOKS = (
    "post_fork", "post_worker_init", "pre_request", "post_request",
    "worker_int", "worker_abort", "worker_exit",
)


class HookConfig:
    """`server.cfg` / `worker.cfg`: the settings by gunicorn's names."""

    def __init__(self, settings):
        self.__dict__.update(settings)
        self.settings = settings

    def __getattr__(self, name):
        raise AttributeError("ferricorn has no setting %r" % name)


class HookServer:
    """The `server` (gunicorn's arbiter) a hook is given."""

    def __init__(self, cfg, master_pid):
        self.pid = master_pid
        self.log = logging.getLogger("gunicorn.error")
        # pid -> worker; kept by the hook host, empty in a worker.
        self.WORKERS = {}
        self.configure(cfg)

    def configure(self, cfg):
        self.cfg = cfg
        self.num_workers = cfg.settings.get("workers")
        self.proc_name = cfg.settings.get("proc_name") or cfg.settings.get("app")
        self.address = cfg.settings.get("bind")
        self.timeout = cfg.settings.get("timeout")


class HookWorker:
    """The `worker` a hook is given: in a worker, itself; in the hook host,
    gunicorn's Worker as the arbiter sees it (`pid` "[booting]" in pre_fork)."""

    def __init__(self, cfg, age, master_pid, pid=None):
        import os
        import time

        self.cfg = cfg
        self.log = logging.getLogger("gunicorn.error")
        self.pid = os.getpid() if pid is None else pid
        self.ppid = master_pid
        self.age = age
        self.booted = False
        self.aborted = False
        self.alive = True
        self.nr = 0
        self.started = time.time()
        self.wsgi = None


class HookRequest:
    """`req` for pre_request and post_request: gunicorn's Request attributes."""

    def __init__(self, method, uri, path, query, version, headers, remote_addr, scheme):
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.version = version
        # gunicorn: (NAME, value) pairs with upper-case names.
        self.headers = headers
        self.remote_addr = remote_addr
        self.scheme = scheme


class HookResponse:
    """`resp` for post_request."""

    def __init__(self, status, headers, sent):
        self.status = status
        self.status_code = int(status.split(None, 1)[0])
        self.headers = headers
        self.sent = sent
        self.response_length = sent


def _resolve(ref):
    """A TOML hook: "package.module:function"."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError("a hook is named module:function, not %r" % ref)
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError("hook %r is not callable" % ref)
    return obj


def _hook_functions(names, refs, config_path):
    """The functions of hooks `names`: TOML references first, else the
    gunicorn *.py config's functions of those names (the file runs again)."""
    fns = {}
    scope = None
    if config_path:
        scope = {"__file__": config_path, "__name__": "__config__"}
        with open(config_path, "rb") as f:
            exec(compile(f.read(), config_path, "exec"), scope)
    for name in names:
        if refs.get(name):
            fns[name] = _resolve(refs[name])
        elif scope is not None and callable(scope.get(name)):
            fns[name] = scope[name]
    return fns


class Hooks:
    """The worker-side hooks of this configuration, and what they are given."""

    def __init__(self, refs, config_path, settings, age, master_pid):
        self.fns = _hook_functions(WORKER_HOOKS, refs, config_path)
        cfg = HookConfig(settings)
        self.server = HookServer(cfg, master_pid)
        self.worker = HookWorker(cfg, age, master_pid)

    def has(self, name):
        return name in self.fns

    def call(self, name, *args):
        """Run a hook; its exception propagates (the caller decides what it means)."""
        fn = self.fns.get(name)
        if fn is not None:
            fn(*args)

    def post_fork(self):
        self.call("post_fork", self.server, self.worker)

    def post_worker_init(self, app):
        self.worker.wsgi = app
        self.worker.booted = True
        self.call("post_worker_init", self.worker)

    def worker_int(self):
        self.call("worker_int", self.worker)

    def worker_abort(self):
        self.call("worker_abort", self.worker)

    def worker_exit(self):
        self.worker.alive = False
        self.call("worker_exit", self.server, self.worker)

    def pre_request(self, req):
        self.worker.nr += 1
        self.call("pre_request", self.worker, req)

    def post_request(self, req, environ, resp):
        self.call("post_request", self.worker, req, environ, resp)

    def request(self, *args):
        return HookRequest(*args)

    def response(self, *args):
        return HookResponse(*args)


# ---- Server hooks that gunicorn runs in its arbiter: ferricorn runs them in
# the hook host, a Python child of the master that keeps their state.

ARBITER_HOOKS = (
    "on_starting", "on_reload", "when_ready", "pre_fork", "pre_exec",
    "child_exit", "nworkers_changed", "on_exit",
)


class ArbiterHooks:
    """The hook host's state: the hooks, `server` and its WORKERS. `handle`
    takes the master's messages (JSON) and returns the reply (JSON) or None."""

    def __init__(self, master_pid):
        self.master_pid = master_pid
        self.fns = {}
        self.server = None
        self.booting = {}

    def handle(self, text):
        import json

        m = json.loads(text)
        op = m["op"]
        if op == "configure":
            self.fns = _hook_functions(ARBITER_HOOKS, m["refs"], m["config_file"])
            cfg = HookConfig(m["settings"])
            if self.server is None:
                self.server = HookServer(cfg, self.master_pid)
            else:
                self.server.configure(cfg)
            return json.dumps({"hooks": sorted(self.fns)})
        if op == "forked":
            w = self.booting.pop(m["age"], None) or self._worker(m["age"])
            w.pid = m["pid"]
            self.server.WORKERS[w.pid] = w
            return None
        # op == "call": run one hook, reply when it returned.
        self.server.num_workers = m["num_workers"]
        error = None
        try:
            self._call(m)
        except BaseException:
            error = format_exception()
        return json.dumps({"seq": m["seq"], "error": error})

    def _worker(self, age, pid="[booting]"):
        return HookWorker(self.server.cfg, age, self.master_pid, pid)

    def _call(self, m):
        hook = m["hook"]
        if hook == "pre_fork":
            w = self._worker(m["age"])
            self.booting[m["age"]] = w
            args = (self.server, w)
        elif hook == "child_exit":
            w = self.server.WORKERS.pop(m["pid"], None) or self._worker(m["age"], m["pid"])
            w.alive = False
            args = (self.server, w)
        elif hook == "nworkers_changed":
            args = (self.server, m["new"], m["old"])
        else:
            args = (self.server,)
        fn = self.fns.get(hook)
        if fn is not None:
            fn(*args)
