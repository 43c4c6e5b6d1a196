//! Serving: a current-thread tokio runtime does all network I/O with hyper;
//! app calls run on the app threads (sync, gthread) or in greenlets on the
//! gevent hub. The worker accepts only while it has capacity (sync: one
//! connection; gthread and gevent: `worker_connections`).

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pyo3::prelude::*;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use super::acceptor::Acceptor;
use super::dispatch::Jobs;
use super::{Reporter, asgi, gevent, pool, reload};
use crate::asgi::AsgiApp;
use crate::config::{BindAddr, Config, Networks, ProxyProtocol, WorkerClass};
use crate::http::idle::{ConnState, IdleIo, Open, ReadReady, Timing};
use crate::http::service::{self, Leniency, Limits, Shared};
use crate::http::shutdown::{stopping, until_stopped};
use crate::listen::Listener;
use crate::listen::balance::Seat;
use crate::log::access::AccessLog;
use crate::proto::Kind;
use crate::python::LoadedApp;
use crate::request::forwarded::Forwarded;
use crate::request::hub::{Hub, Phase};
use crate::request::outbox;
use crate::request::{Ledger, Stats, Wait};
use crate::request::{Local, Peer};
use crate::tls::TlsInfo;
use crate::wsgi::{Options, WsgiApp};
use crate::{error, info};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// gunicorn's worker exits 1 on SIGABRT (sent on timeout) instead of dumping core.
extern "C" fn on_abort(_: libc::c_int) {
    crate::sys::exit_now(1);
}

pub(super) struct Conf {
    pub(super) class: WorkerClass,
    pub(super) capacity: usize,
    pub(super) idle: Duration,
    keep_alive: bool,
    pub(super) header_timeout: Duration,
    graceful: Duration,
    heartbeat: Duration,
    max_fields: usize,
    min_body_rate: u32,
    min_response_rate: u32,
    /// This worker's place on the master's connection board (not for sync
    /// workers: one connection at a time balances itself).
    pub(super) seat: Option<Seat>,
    /// Bumped by an acceptor at the connection limit: idle connections
    /// (no request in progress) close to make room.
    pub(super) room: watch::Sender<u64>,
    /// `--proxy-protocol` (not off), and who may send the header.
    pub(super) proxy: Option<(ProxyProtocol, Networks)>,
    /// `--certfile`: every connection begins with a TLS handshake.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    /// `--http-protocols` with h2: HTTP/2's settings.
    pub(super) h2: Option<super::http2::Settings>,
    /// `--http2-cleartext prior-knowledge`: the peers whose connections may
    /// open with the HTTP/2 preface (unix sockets' always may).
    pub(super) h2c: Option<Forwarded>,
}

pub fn serve(
    cfg: &Config,
    listeners: &[Listener],
    seat: Option<Seat>,
    reporter: Reporter,
    loaded: LoadedApp,
) -> i32 {
    // With a worker_abort hook, the I/O loop takes ABRT (below) to run it.
    let abort_hook = crate::python::hooks::installed().is_some_and(|h| h.has_abort);
    if !abort_hook {
        let abort = SigAction::new(
            SigHandler::Handler(on_abort),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only calls _exit, which is async-signal-safe.
        let _ = unsafe { sigaction(Signal::SIGABRT, &abort) };
    }
    let s = &cfg.settings;
    let class = cfg.worker_class;
    let conf = Conf {
        class,
        capacity: match class {
            WorkerClass::Sync => 1,
            _ => s.worker_connections as usize,
        },
        keep_alive: class != WorkerClass::Sync && s.keepalive > 0,
        idle: Duration::from_secs(match class {
            WorkerClass::Gthread | WorkerClass::Gevent | WorkerClass::Asgi if s.keepalive > 0 => {
                s.keepalive
            }
            _ => s.header_timeout,
        }),
        header_timeout: Duration::from_secs(s.header_timeout),
        graceful: Duration::from_secs(s.graceful_timeout),
        heartbeat: if s.timeout == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_millis((s.timeout * 1000 / 4).clamp(100, 1000))
        },
        max_fields: s.limit_request_fields as usize,
        min_body_rate: s.min_request_body_rate,
        min_response_rate: s.min_response_rate,
        seat: seat.filter(|_| class != WorkerClass::Sync),
        room: watch::Sender::new(0),
        proxy: (s.proxy_protocol != ProxyProtocol::Off)
            .then(|| (s.proxy_protocol, cfg.proxy_allow.clone())),
        tls: cfg
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone())),
        h2: cfg.protocols.h2.then_some(super::http2::Settings {
            max_streams: s.http2_max_concurrent_streams,
            window: s.http2_initial_window_size,
            max_frame: s.http2_max_frame_size,
            max_header_list: s.http2_max_header_list_size,
        }),
        h2c: (cfg.protocols.h2c && cfg.tls.is_none()).then(|| Forwarded {
            allow_all: cfg.forwarded_allow_all,
            allow: cfg.forwarded_allow.clone(),
        }),
    };
    let hub = match class {
        WorkerClass::Gevent | WorkerClass::Asgi => match Hub::new(s.request_timeout > 0) {
            Ok(hub) => Some(hub),
            Err(e) => {
                error!("Could not set up the event loop's wake-up descriptor: {e}");
                return crate::proto::WORKER_BOOT_ERROR;
            }
        },
        WorkerClass::Sync | WorkerClass::Gthread => None,
    };

    let stats = Arc::new(Stats::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);

    let access = match &s.accesslog {
        Some(target) => match AccessLog::open(target, &s.access_log_format) {
            Ok(a) => Some(a),
            Err(e) => {
                error!("{e}");
                return crate::proto::WORKER_BOOT_ERROR;
            }
        },
        None => None,
    };
    let max_requests = if s.max_requests > 0 {
        s.max_requests + jitter(s.max_requests_jitter)
    } else {
        0
    };
    let statsd = match cfg.statsd {
        Some(to) => match crate::statsd::Statsd::connect(to, &s.statsd_prefix) {
            Ok(statsd) => Some(statsd),
            Err(e) => {
                error!("Could not open a socket to statsd at {to}: {e}");
                return crate::proto::WORKER_BOOT_ERROR;
            }
        },
        None => None,
    };
    let trigger = shutdown_tx.clone();
    let ledger = Arc::new(Ledger::new(
        access,
        s.access_log_format.contains("}o)"),
        stats.clone(),
        max_requests,
        Box::new(move || {
            let _ = trigger.send(true);
        }),
        seat.and_then(|seat| crate::metrics::slot(seat.index())),
        statsd,
    ));
    let forwarded = Forwarded {
        allow_all: cfg.forwarded_allow_all,
        allow: cfg.forwarded_allow.clone(),
    };
    let app = Python::attach(|py| match class {
        WorkerClass::Asgi => AsgiApp::new(py, loaded.app, forwarded, &s.root_path, ledger.clone())
            .map(|a| App::Asgi(Arc::new(a))),
        _ => WsgiApp::new(
            py,
            loaded.app,
            &loaded.support,
            Options {
                underscore_headers: s.header_map == crate::config::HeaderMap::Dangerous,
                forwarder_headers: s
                    .forwarder_headers
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
                multithread: class != WorkerClass::Sync,
                multiprocess: s.workers > 1,
                forwarded,
                wait: hub.clone().map_or(Wait::Thread, Wait::Hub),
            },
            ledger.clone(),
        )
        .map(|a| App::Wsgi(Arc::new(a))),
    });
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            error!("Could not prepare the app's environment: {e}");
            return crate::proto::WORKER_BOOT_ERROR;
        }
    };

    let reporter = Arc::new(reporter);
    if s.reload {
        let mut files = Python::attach(reload::module_files).unwrap_or_default();
        files.extend(s.reload_extra_files.iter().map(std::path::PathBuf::from));
        let (reporter, stats) = (reporter.clone(), stats.clone());
        let watched = reload::watch(files, move |path| {
            info!("Worker reloading: {} modified", path.display());
            reporter.send(Kind::Reload, &stats);
        });
        if let Err(e) = watched {
            error!("Could not watch the app's files for --reload: {e}");
        }
    }
    let jobs = match (&hub, &app) {
        (Some(hub), _) => Jobs::Hub(hub.clone()),
        (None, App::Wsgi(app)) => {
            let threads = if class == WorkerClass::Sync {
                1
            } else {
                s.threads
            };
            let queue = pool::start(threads, app.clone(), class == WorkerClass::Gthread);
            let (reporter, stats, shutdown) =
                (reporter.clone(), stats.clone(), shutdown_tx.clone());
            queue.when_stuck(
                stats.clone(),
                Arc::new(move || {
                    reporter.send(Kind::Replace, &stats);
                    // A sync worker's one thread is the stuck one: accepting
                    // would queue connections behind it. A gthread worker serves
                    // on with its other threads until its replacement is up.
                    if class == WorkerClass::Sync {
                        let _ = shutdown.send(true);
                    }
                }),
            );
            Jobs::Threads(queue)
        }
        (None, App::Asgi(_)) => unreachable!("asgi workers always have a hub"),
    };

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("Could not start the I/O runtime: {e}");
            return crate::proto::WORKER_BOOT_ERROR;
        }
    };
    let shared = Arc::new(Shared {
        jobs: Arc::new(jobs.clone()),
        request_timeout: (s.request_timeout > 0).then(|| Duration::from_secs(s.request_timeout)),
        limits: Limits {
            request_line: s.limit_request_line as usize,
            fields: conf.max_fields,
            field_size: s.limit_request_field_size as usize,
        },
        lenient: Leniency {
            obs_fold: s.permit_obsolete_folding,
            unconventional_method: s.permit_unconventional_http_method,
            casefold_method: s.casefold_http_method,
            strip_header_spaces: s.strip_header_spaces,
            refuse_underscores: s.header_map == crate::config::HeaderMap::Refuse,
        },
        stats: stats.clone(),
        websocket_max_message: (class == WorkerClass::Asgi)
            .then_some(s.websocket_max_message_size as usize),
        half_close: class != WorkerClass::Asgi,
        shutdown: shutdown_rx.clone(),
    });
    let conf = Arc::new(conf);
    // The loop beats twice per heartbeat so that every tick sees it alive.
    let beat = conf.heartbeat / 2;
    let io = {
        move || {
            rt.block_on(run(
                listeners,
                reporter,
                shared,
                conf,
                stats,
                ledger,
                jobs,
                shutdown_tx,
                shutdown_rx,
            ))
        }
    };
    match (hub, app) {
        (Some(hub), App::Wsgi(app)) => gevent::serve(hub, app, beat, io),
        (Some(hub), App::Asgi(app)) => asgi::serve(
            hub,
            app,
            asgi::LoopOptions {
                beat,
                event_loop: s.asgi_loop,
                lifespan: s.asgi_lifespan,
            },
            io,
        ),
        (None, _) => io(),
    }
}

/// INT or QUIT: gunicorn's worker_int, then leave at once.
fn quit_now() -> ! {
    crate::python::hooks::run_on_the_way_out("worker_int", super::HOOK_TIME_ON_EXIT);
    super::exit(0)
}

enum App {
    Wsgi(Arc<WsgiApp>),
    Asgi(Arc<AsgiApp>),
}

fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    // A new RandomState is seeded from the system's random source.
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    random % (max + 1)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    listeners: &[Listener],
    reporter: Arc<Reporter>,
    shared: Arc<Shared>,
    conf: Arc<Conf>,
    stats: Arc<Stats>,
    ledger: Arc<Ledger>,
    jobs: Jobs,
    shutdown_tx: Arc<watch::Sender<bool>>,
    shutdown_rx: watch::Receiver<bool>,
) -> i32 {
    let hub = match &jobs {
        Jobs::Hub(hub) => Some(hub.clone()),
        Jobs::Threads(_) => None,
    };
    // An event loop must be up (asgi: lifespan startup done) before the
    // worker accepts or counts as booted.
    if let Some(hub) = &hub
        && hub.started().await != Phase::Serving
    {
        return crate::proto::WORKER_BOOT_ERROR;
    }
    let slots = Arc::new(Semaphore::new(conf.capacity));
    if let Some(seat) = conf.seat {
        seat.open();
    }
    for l in listeners {
        let fd = match l.fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                error!("Could not use listener {}: {e}", l.addr);
                return crate::proto::WORKER_BOOT_ERROR;
            }
        };
        let _ = crate::sys::set_nonblocking(&fd, true);
        let (host, port) = match &l.addr {
            BindAddr::Tcp(sa) => (sa.ip().to_string(), sa.port().to_string()),
            _ => ("localhost".to_string(), "".to_string()),
        };
        let local = Arc::new(Local { host, port });
        let accept = Acceptor {
            slots: slots.clone(),
            shutdown: shutdown_rx.clone(),
            shared: shared.clone(),
            conf: conf.clone(),
            local,
        };
        match accept.start(fd, l.is_unix()) {
            Ok(task) => {
                tokio::spawn(task);
            }
            Err(e) => error!("Could not use listener {}: {e}", l.addr),
        }
    }

    // TERM: graceful; INT/QUIT: now; USR1: reopen logs. Registered here,
    // before the worker counts as booted, not in the task below.
    let graceful_tx = shutdown_tx.clone();
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
    );
    let mut abort = if crate::python::hooks::installed().is_some_and(|h| h.has_abort) {
        signal(SignalKind::from_raw(libc::SIGABRT)).ok()
    } else {
        None
    };
    if super::reopen_asked_while_booting() {
        crate::log::reopen();
        ledger.reopen();
    }
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr1)) = handlers else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = graceful_tx.send(true); }
                _ = int.recv() => quit_now(),
                _ = quit.recv() => quit_now(),
                Some(()) = async { match &mut abort { Some(a) => a.recv().await, None => std::future::pending().await } } => {
                    // --timeout: gunicorn's worker_abort, then exit 1.
                    crate::python::hooks::run_on_the_way_out("worker_abort", Duration::from_secs(1));
                    super::exit(1);
                }
                _ = usr1.recv() => { crate::log::reopen(); ledger.reopen(); }
            }
        }
    });

    if let Jobs::Hub(hub) = &jobs {
        let (hub, stats) = (hub.clone(), stats.clone());
        tokio::spawn(async move { hub.outbox.run(&stats.in_flight, 0).await });
    }
    if let Jobs::Threads(queue) = jobs {
        if queue.batch {
            let (queue, stats) = (queue.clone(), stats.clone());
            tokio::spawn(async move {
                queue
                    .outbox
                    .run(&stats.in_flight, outbox::LINGER_TICKS)
                    .await
            });
        }
        let queue = queue.clone();
        tokio::spawn(async move { queue.call_deferred().await });
    }

    reporter.send(Kind::Booted, &stats);
    let master = std::os::unix::process::parent_id();
    let mut beat = tokio::time::interval(conf.heartbeat);
    let mut shutdown = shutdown_rx.clone();
    let mut last_beats = 0;
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if std::os::unix::process::parent_id() != master {
                    info!("Parent changed, shutting down: {}", std::process::id());
                    return 0;
                }
                // sync: a worker busy in the app is silent, so a request longer
                // than --timeout gets it killed (gunicorn's semantics); gevent:
                // so is a worker whose hub has not run since the last tick.
                let silent = match (&hub, conf.class) {
                    (Some(hub), _) => {
                        let beats = hub.beats();
                        std::mem::replace(&mut last_beats, beats) == beats
                    }
                    (None, WorkerClass::Sync) => stats.in_flight.load(Ordering::Relaxed) > 0,
                    (None, _) => false,
                };
                if !silent && !reporter.send(Kind::Heartbeat, &stats) {
                    return 0;
                }
            }
            _ = stopping(&mut shutdown) => break,
        }
    }
    if let Some(seat) = conf.seat {
        seat.retire();
    }
    // Stop listening in this process (the acceptors dropped their copies):
    // while a draining worker holds a listening socket the kernel queues new
    // connections to it; once the master has closed its own (TERM), those
    // would wait for nobody and be reset at exit. Now they are refused, or
    // land on the workers that replace this one.
    for l in listeners {
        if let Err(e) = crate::sys::release_fd(&l.fd) {
            error!("Could not close listener {}: {e}", l.addr);
        }
    }

    // Drain: acceptors have stopped; wait for every connection slot to come back.
    let deadline = tokio::time::Instant::now() + conf.graceful;
    let drained = tokio::time::timeout_at(deadline, slots.acquire_many(conf.capacity as u32)).await;
    // Then for the app to finish with requests whose responses are out
    // (close(), the access log line); not for threads stuck past
    // --request-timeout, whose clients were answered.
    while stats.in_flight.load(Ordering::Relaxed) > stats.stuck.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if drained.is_err() {
        info!(
            "Worker (pid:{}) graceful timeout reached with connections open",
            std::process::id()
        );
    }
    // asgi: lifespan shutdown, given at least a second.
    if let Some(hub) = &hub {
        let until = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
        let _ = tokio::time::timeout_at(until, hub.stop()).await;
    }
    reporter.send(Kind::Heartbeat, &stats);
    0
}

/// What every connection of a listener is served with, HTTP/1.1 or HTTP/2.
pub(super) struct Serving {
    pub(super) shared: Arc<Shared>,
    pub(super) conf: Arc<Conf>,
    pub(super) local: Arc<Local>,
    pub(super) shutdown: watch::Receiver<bool>,
}

pub(super) async fn connection<S>(
    stream: S,
    peer: Peer,
    tls: Option<Arc<TlsInfo>>,
    serving: Serving,
) where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let Serving {
        shared,
        conf,
        local,
        mut shutdown,
    } = serving;
    let _open = Open::count();
    let state = Arc::new(ConnState::default());
    let mut io = TokioIo::new(IdleIo::new(
        stream,
        state.clone(),
        Timing {
            idle: conf.idle,
            head: conf.header_timeout,
            min_body_rate: conf.min_body_rate,
            min_response_rate: conf.min_response_rate,
        },
        shared.limits,
        shared.lenient,
        shared.websocket_max_message.is_some(),
        peer,
    ));
    let max_head = shared.limits.max_head();
    let half_close = shared.half_close;
    let mut builder = http1::Builder::new();
    // No hyper timer: --header-timeout is IdleIo's (see src/http/idle.rs).
    builder
        .keep_alive(conf.keep_alive)
        .max_headers(conf.max_fields.max(1))
        // The framing authority bounds a head; hyper's buffer must hold the largest it passes.
        .max_buf_size(max_head.max(8192) + 8192)
        // A client that sends its request and shuts its write side (health
        // checkers, `nc -N`, HTTP/1.0 tools) still gets its answers.
        .half_close(half_close);
    let mut room = conf.room.subscribe();
    let result = 'serving: loop {
        let svc = {
            let (shared, state, local) = (shared.clone(), state.clone(), local.clone());
            let tls = tls.clone();
            service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                // Now, before hyper reserves its next read (see src/http/head.rs).
                crate::http::head::detach(&mut req);
                if let Some(info) = &tls {
                    req.extensions_mut().insert(info.clone());
                }
                service::handle(&shared, &state, peer, &local, req)
            })
        };
        let mut conn = builder.serve_connection(io, svc).with_upgrades();
        let result = loop {
            // hyper's connection to its end, or until the socket says the
            // connection is idle in a crowded worker (see src/http/idle.rs).
            let work = std::future::poll_fn(|cx| match Pin::new(&mut conn).poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending if state.take_park() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            });
            let wake = Box::pin(async {
                tokio::select! {
                    _ = stopping(&mut shutdown) => {}
                    _ = room.changed() => {}
                }
            });
            match until_stopped(std::pin::pin!(work), wake).await {
                Some(Some(r)) => break r,
                Some(None) => {
                    let Some(parts) = conn.into_parts() else {
                        break 'serving Ok(());
                    };
                    io = parts.io;
                    io.inner_mut().unread(parts.read_buf);
                    // hyper's buffers are gone; the socket waits alone.
                    if io.inner_mut().park(&mut shutdown, &mut room).await {
                        continue 'serving;
                    }
                    break 'serving Ok(());
                }
                None => {}
            }
            if *shutdown.borrow() {
                // Draining. A request in progress is answered with `Connection:
                // close`, and so is any that arrives from now on (a client may
                // have sent it before it could know); a connection that stays
                // idle for DRAIN_IDLE is closed (src/http/idle.rs). Closing idle
                // ones at once would lose the requests already on the wire.
                state.drain();
                if state.busy.load(Ordering::Relaxed) > 0 {
                    Pin::new(&mut conn).graceful_shutdown();
                }
                break (&mut conn).await;
            }
            // The worker is at its connection limit: an idle keep-alive
            // connection (or one still sending its first head) makes room.
            if state.busy.load(Ordering::Relaxed) == 0 {
                Pin::new(&mut conn).graceful_shutdown();
                break (&mut conn).await;
            }
        };
        break result;
    };
    if let Err(e) = result {
        if e.is_parse() || e.is_parse_status() {
            crate::warning!("Invalid request from {}: {e}", peer.ip_string());
        } else if !e.is_incomplete_message() && !e.is_closed() && !e.is_canceled() {
            crate::debug!("connection from {} ended: {e}", peer.ip_string());
        }
    }
}
