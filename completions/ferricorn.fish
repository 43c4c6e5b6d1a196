complete -c ferricorn -s b -l bind -d 'Address to listen on: HOST, HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeatable. [default: 127.0.0.1:8000, or 0.0.0.0:$PORT]' -r
complete -c ferricorn -l metrics-bind -d 'Serve Prometheus metrics here, from the master: `GET /metrics` (requests by status class, duration and wait histograms, in flight, workers by state, restarts by reason, boot time, the listen queue). HOST:PORT or unix:PATH. [default: none]' -r
complete -c ferricorn -l control-socket -d 'Listen for `ferricorn ctl` here (a unix socket only our user may use). [default: none, or $RUNTIME_DIRECTORY/ferricorn.ctl when systemd sets RuntimeDirectory=]' -r -F
complete -c ferricorn -l health-bind -d 'Answer health checks here, from the master: `GET /livez` (200 while the master runs and a worker is alive) and `GET /readyz` (200 while a worker serves and the server is not stopping, else 503). HOST:PORT or unix:PATH. [default: none]' -r
complete -c ferricorn -l backlog -d 'Maximum number of pending connections. [default: 2048]' -r
complete -c ferricorn -s w -l workers -d 'Number of worker processes. [default: 1, or $WEB_CONCURRENCY]' -r
complete -c ferricorn -s k -l worker-class -d 'Worker class: sync (one request at a time), gthread (threads + keep-alive), gevent (greenlets; needs gevent in the app\'s environment) or asgi (an ASGI 3 app on asyncio). [default: sync]' -r -f -a "sync\t'One request at a time, `Connection: close`; a long request is a silent worker'
gthread\t'Connections on tokio, app calls on `threads` Python threads, keep-alive'
gevent\t'Each request in a greenlet on the gevent hub (monkey-patched), keep-alive'
asgi\t'An ASGI 3 app on an asyncio event loop, one task per request, keep-alive'"
complete -c ferricorn -l threads -d 'Python threads per worker for app calls; above 1, sync becomes gthread. [default: 1]' -r
complete -c ferricorn -l worker-connections -d 'Maximum simultaneous connections per gthread, gevent or asgi worker. [default: 1000]' -r
complete -c ferricorn -l max-requests -d 'Restart a worker after this many requests; 0 disables. [default: 0]' -r
complete -c ferricorn -l max-requests-jitter -d 'Add a random 0..=N to max-requests per worker, so workers do not restart together. [default: 0]' -r
complete -c ferricorn -l max-worker-memory -d 'Replace a worker whose memory (resident, plus swap and page tables: what the OOM killer counts) stays above this many MB for three checks in a row (one a second); a new worker boots first, the old one finishes its requests. 0 disables. [default: 0]' -r
complete -c ferricorn -l max-worker-lifetime -d 'Replace a worker after it has run this many seconds, one worker at a time; a new worker boots first. 0 disables. [default: 0]' -r
complete -c ferricorn -l max-worker-lifetime-jitter -d 'Add a random 0..=N seconds to each worker\'s lifetime, so workers are not replaced together. [default: 0]' -r
complete -c ferricorn -s t -l timeout -d 'Kill and replace a worker silent this many seconds (sync: a request this long; gevent, asgi: an event loop blocked this long); 0 disables. [default: 30]' -r
complete -c ferricorn -l request-timeout -d 'Answer 504 to a request still running after this many seconds, log where it is stuck, and stop it (asgi: cancel its task; gevent: kill its greenlet; sync, gthread: replace the worker once its other requests finish); 0 disables. [default: 0]' -r
complete -c ferricorn -l graceful-timeout -d 'Seconds workers get to finish in-flight requests on stop or reload. [default: 30]' -r
complete -c ferricorn -l keep-alive -d 'Seconds an idle keep-alive connection is kept open (gthread, gevent, asgi). [default: 2]' -r
complete -c ferricorn -l reload-extra-file -d 'With --reload, also watch this file (templates, settings). Repeatable. [default: none]' -r
complete -c ferricorn -l post-fork -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In each worker after it is forked, before the app is imported: post_fork(server, worker). [default: none]' -r
complete -c ferricorn -l post-worker-init -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In each worker once the app is imported: post_worker_init(worker). [default: none]' -r
complete -c ferricorn -l pre-request -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). Before each request reaches the app: pre_request(worker, req). [default: none]' -r
complete -c ferricorn -l post-request -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). After each request\'s response: post_request(worker, req, environ, resp). [default: none]' -r
complete -c ferricorn -l worker-int -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In a worker told to stop at once (INT, QUIT): worker_int(worker). [default: none]' -r
complete -c ferricorn -l worker-abort -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In a worker stopped for --timeout (ABRT): worker_abort(worker). [default: none]' -r
complete -c ferricorn -l worker-exit -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In a worker as it exits: worker_exit(server, worker). [default: none]' -r
complete -c ferricorn -l on-starting -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host, before the listeners are bound: on_starting(server). [default: none]' -r
complete -c ferricorn -l when-ready -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host, once the listeners are bound, before the first worker is forked: when_ready(server). [default: none]' -r
complete -c ferricorn -l on-reload -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host on HUP, once the new configuration is read: on_reload(server). [default: none]' -r
complete -c ferricorn -l pre-fork -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host before each worker is forked; the master waits for it: pre_fork(server, worker). [default: none]' -r
complete -c ferricorn -l pre-exec -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host before an upgrade (USR2) executes the new binary: pre_exec(server). [default: none]' -r
complete -c ferricorn -l child-exit -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host after a worker has exited and was reaped: child_exit(server, worker). [default: none]' -r
complete -c ferricorn -l nworkers-changed -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host when the number of workers is set (start, HUP, TTIN, TTOU): nworkers_changed(server, new_value, old_value). [default: none]' -r
complete -c ferricorn -l on-exit -d 'Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host as the master exits: on_exit(server). [default: none]' -r
complete -c ferricorn -l limit-request-line -d 'Maximum size of the HTTP request line in bytes; 0 means 8190. [default: 4094]' -r
complete -c ferricorn -l limit-request-fields -d 'Maximum number of request header fields. [default: 100]' -r
complete -c ferricorn -l limit-request-field_size -d 'Maximum size of one request header field in bytes; 0 means 8190. [default: 8190]' -r
complete -c ferricorn -l header-timeout -d 'Seconds a client gets to send a request head, from its first byte to the blank line ending it, before it is cut off (the wait between requests is --keep-alive\'s). [default: 10]' -r
complete -c ferricorn -l min-request-body-rate -d 'The slowest a client may send a request body, in bytes per second averaged after a 5 s grace; below it the client gets 408 and the app\'s read fails, freeing its thread (0: no floor). [default: 240]' -r
complete -c ferricorn -l min-response-rate -d 'The slowest a client may read its response, in bytes per second averaged after a 5 s grace; below it the connection is closed, freeing the app thread that writes to it (0: no floor). [default: 240]' -r
complete -c ferricorn -l header-map -d 'Header names with an underscore: drop them from the environ, refuse the request, or map them (dangerous). [default: drop]' -r -f -a "drop\t'Leave them out of the environ'
refuse\t'Refuse the request (400)'
dangerous\t'Map them like any other header (not advisable: a client can pose as a proxy\'s header)'"
complete -c ferricorn -l forwarded-allow-ips -d 'Peers trusted to set X-Forwarded-Proto and friends, comma separated; * trusts all. [default: 127.0.0.1,::1]' -r
complete -c ferricorn -l proxy-protocol -d 'Read a PROXY protocol header (HAProxy, AWS NLB) at the start of each connection: its client becomes REMOTE_ADDR. off, v1, v2 or auto (either); the flag alone means auto. A connection without one is served as plain HTTP. [default: off]' -r -f -a "off\t'None: every connection is plain HTTP'
v1\t'The v1 text line only'
v2\t'The v2 binary header only'
auto\t'Either'"
complete -c ferricorn -l proxy-allow-from -d 'Peers allowed to send a PROXY header, comma separated: addresses, networks (10.0.0.0/8), or * for any; a header from another peer is refused (403). [default: 127.0.0.1,::1]' -r
complete -c ferricorn -l forwarder-headers -d 'Header names with an underscore that a trusted proxy (--forwarded-allow-ips) may set for the environ, comma separated: SCRIPT_NAME sets the environ\'s SCRIPT_NAME (and is stripped from PATH_INFO), the others become HTTP_* keys. [default: SCRIPT_NAME,PATH_INFO]' -r
complete -c ferricorn -l certfile -d 'Serve HTTPS with this certificate chain (PEM, the server\'s own certificate first). Read by the master at start and on every reload (HUP, USR2), so it may be readable by root only. [default: none]' -r -F
complete -c ferricorn -l keyfile -d 'The certificate\'s private key (PEM: PKCS#8, RSA or EC, unencrypted). [default: the key in --certfile]' -r -F
complete -c ferricorn -l ca-certs -d 'CA certificates (PEM) that client certificates are verified against (--cert-reqs 1 or 2). [default: none]' -r -F
complete -c ferricorn -l cert-reqs -d 'Client certificates: 0 not asked for, 1 asked for and verified when sent, 2 required (Python\'s ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED). The verified chain reaches the app as environ SSL_CLIENT_CERT or the ASGI tls extension. [default: 0]' -r
complete -c ferricorn -l ciphers -d 'TLS cipher suites: names separated by `:`, OpenSSL\'s (ECDHE-RSA-AES128-GCM-SHA256) or IANA\'s. They restrict TLS 1.2, and TLS 1.3 as well when the list names a TLS 1.3 suite. [default: every suite rustls serves: AES-GCM and ChaCha20-Poly1305 with ECDHE; TLS 1.2 and 1.3]' -r
complete -c ferricorn -l http-protocols -d 'HTTP versions served, comma separated, preferred first: h1, h2. Over TLS they are offered by ALPN (a client that does not offer h2 is served HTTP/1.1); in cleartext, h2 needs --http2-cleartext. [default: h1]' -r
complete -c ferricorn -l http2-cleartext -d 'Cleartext HTTP/2 (h2c): off, or prior-knowledge (a connection from a --forwarded-allow-ips peer, or over a unix socket, that opens with the HTTP/2 preface is served HTTP/2: a proxy speaking h2 upstream). Needs h2 in --http-protocols; over TLS, ALPN decides instead. [default: off]' -r -f -a "off\t'HTTP/2 only over TLS'
prior-knowledge\t'Connections that open with the HTTP/2 preface'"
complete -c ferricorn -l http2-max-concurrent-streams -d 'Requests one HTTP/2 connection may have in progress at once. [default: 100]' -r
complete -c ferricorn -l http2-initial-window-size -d 'Bytes of a request body an HTTP/2 client may send on a stream before the app reads them (the flow-control window; at most 2147483647). [default: 65535]' -r
complete -c ferricorn -l http2-max-frame-size -d 'Largest HTTP/2 frame payload accepted, bytes (16384 to 16777215). [default: 16384]' -r
complete -c ferricorn -l http2-max-header-list-size -d 'Largest HTTP/2 header list accepted, bytes after HPACK decoding; a larger one is refused (431). [default: 65536]' -r
complete -c ferricorn -l chdir -d 'Change to this directory before loading the app. [default: the current directory]' -r -F
complete -c ferricorn -s e -l env -d 'Set an environment variable for the app: KEY=VALUE. Repeatable. [default: none]' -r
complete -c ferricorn -l pythonpath -d 'Extra directories on sys.path, comma separated. [default: none]' -r
complete -c ferricorn -l virtualenv -d 'The app\'s virtualenv (made with the same Python version). [default: $VIRTUAL_ENV, else the virtualenv whose bin/ holds ferricorn]' -r -F
complete -c ferricorn -s n -l name -d 'Process name shown in ps: `ferricorn: master [NAME]`. [default: the app]' -r
complete -c ferricorn -s p -l pid -d 'Write the master\'s PID to this file (removed on exit). [default: none]' -r -F
complete -c ferricorn -s u -l user -d 'Run workers as this user (name or uid). [default: the current user]' -r
complete -c ferricorn -s g -l group -d 'Run workers as this group (name or gid). [default: the user\'s group]' -r
complete -c ferricorn -s m -l umask -d 'File mode creation mask, e.g. 0o022. [default: 0]' -r
complete -c ferricorn -l access-logfile -d 'Access log file; `-` is stdout. [default: none]' -r
complete -c ferricorn -l access-logformat -d 'Access log format with gunicorn\'s atoms (h l u t r s m U q H b B f a T M D L p, {header}i, {header}o, {var}e)' -r
complete -c ferricorn -l log-config -d 'Configure the app\'s Python logging from this file, in logging.config.fileConfig\'s format (gunicorn\'s logconfig). [default: none]' -r -F
complete -c ferricorn -l log-config-json -d 'Configure the app\'s Python logging from this JSON file, in logging.config.dictConfig\'s format; above --log-config. [default: none]' -r -F
complete -c ferricorn -l log-config-dict -d 'Configure the app\'s Python logging from this dictConfig dictionary (a TOML table, a Python dict, or JSON text); above the two files. [default: none]' -r
complete -c ferricorn -l statsd-host -d 'Send gunicorn\'s statsd metrics here over UDP (gunicorn.requests, gunicorn.request.duration, gunicorn.request.status.CODE, gunicorn.workers). HOST:PORT. [default: none]' -r
complete -c ferricorn -l statsd-prefix -d 'Put this before the statsd metrics\' names (a dot is added). [default: ""]' -r
complete -c ferricorn -l error-logfile -d 'Error log file; `-` is stderr. [default: -]' -r
complete -c ferricorn -l asgi-loop -d 'asgi: the event loop: auto (uvloop if installed), asyncio, uvloop. [default: auto]' -r -f -a "auto\t'uvloop when it is installed, else asyncio\'s own'
asyncio\t''
uvloop\t''"
complete -c ferricorn -l asgi-lifespan -d 'asgi: the lifespan protocol: auto (when the app supports it), on, off. [default: auto]' -r -f -a "auto\t'Run it; an app that does not support it carries on without'
on\t'Run it; an app that does not support it fails to boot'
off\t''"
complete -c ferricorn -l root-path -d 'asgi: the scope\'s root_path (the prefix the app is mounted under). [default: ""]' -r
complete -c ferricorn -l websocket-max-message-size -d 'asgi: largest WebSocket message accepted, in bytes. [default: 16777216]' -r
complete -c ferricorn -l journald -d 'Send logs to journald with structured fields: auto (when stderr is the journal), yes, no. [default: auto]' -r -f -a "auto\t'When stderr is connected to the journal ($JOURNAL_STREAM)'
yes\t'Always (the error log must be stderr)'
no\t'Never: plain lines on stderr or in --error-logfile'"
complete -c ferricorn -l log-level -d 'Error log level: debug, info, warning, error, critical. [default: info]' -r
complete -c ferricorn -s c -l config -d 'Read settings from this file: TOML (gunicorn\'s setting names, plus `app`) or a gunicorn *.py config' -r -F
complete -c ferricorn -l worker-tmp-dir -r
complete -c ferricorn -l reload-engine -r
complete -c ferricorn -l dogstatsd-tags -r
complete -c ferricorn -l ssl-version -r
complete -c ferricorn -l preload -d 'Load the app once, before forking workers (faster boot, shared memory); a preloader process holds it and forks the workers, so the master never runs Python. [default: off]'
complete -c ferricorn -l reload -d 'Development: reload when a source file of the app changes (inotify): new workers import the code anew, then the old ones finish their requests, as on HUP. [default: off]'
complete -c ferricorn -l permit-obsolete-folding -d 'Accept header fields continued on a following line (obs-fold, RFC 9112 §5.2), joining them with a space. [default: off]'
complete -c ferricorn -l permit-unconventional-http-method -d 'Accept methods in lowercase or longer than 20 characters (any token). [default: off]'
complete -c ferricorn -l casefold-http-method -d 'Uppercase the request method before the app sees it. [default: off]'
complete -c ferricorn -l strip-header-spaces -d 'Accept white space between a header field name and its colon, and drop it. [default: off]'
complete -c ferricorn -l initgroups -d 'Also set the user\'s supplementary groups in workers. [default: off]'
complete -c ferricorn -l capture-output -d 'Send the app\'s stdout and stderr (print(), warnings, C extensions) to the --error-logfile file, as gunicorn does; under journald they always go to the journal. [default: off]'
complete -c ferricorn -l check-config -d 'Check the configuration and that the app imports, then exit (0 when it does)'
complete -c ferricorn -l print-config -d 'Print the effective settings and where each came from, then exit'
complete -c ferricorn -l no-sendfile
complete -c ferricorn -l reuse-port
complete -c ferricorn -l enable-stdio-inheritance
complete -c ferricorn -l log-syslog
complete -c ferricorn -l suppress-ragged-eofs
complete -c ferricorn -l do-handshake-on-connect
complete -c ferricorn -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ferricorn -s V -l version -d 'Print version'
