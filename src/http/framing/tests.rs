//! The framer on its own, on the cases the issue tracker and gunicorn's
//! vectors name.

use super::head::{Head, Leniency, Limits};
use super::*;

/// What the framer made of one message (tests only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub method: String,
    pub target: String,
    pub chunked: bool,
    pub body: Vec<u8>,
}

impl Message {
    pub fn of(head: &[u8], parsed: &Head) -> Message {
        let start = usize::from(head.starts_with(b"\r\n")) * 2;
        let method_end = start + memchr::memchr(b' ', &head[start..]).unwrap();
        Message {
            method: String::from_utf8_lossy(&head[start..method_end]).into_owned(),
            target: String::from_utf8_lossy(&head[parsed.target.clone()]).into_owned(),
            chunked: parsed.framing == Some(super::head::Framing::Chunked),
            body: Vec::new(),
        }
    }
}

pub const LIMITS: Limits = Limits {
    request_line: 4094,
    fields: 100,
    field_size: 8190,
};

/// Feed `stream` to a gate in pieces of `piece` bytes; what hyper would read, and the events.
pub fn run_gate(stream: &[u8], piece: usize) -> (Vec<u8>, Vec<Passed>, Framer) {
    run_gate_with(stream, piece, Leniency::default())
}

pub fn run_gate_with(
    stream: &[u8],
    piece: usize,
    lenient: Leniency,
) -> (Vec<u8>, Vec<Passed>, Framer) {
    let mut gate = Gate::new(LIMITS, lenient, false);
    let mut out = Vec::new();
    let mut events = Vec::new();
    for chunk in stream.chunks(piece.max(1)) {
        let passed = if gate.is_clear() {
            gate.pass_in_place(chunk)
        } else {
            gate.pass_held(chunk);
            0
        };
        out.extend_from_slice(&chunk[..passed]);
        let mut space = vec![0u8; 1 << 20];
        let mut rb = tokio::io::ReadBuf::new(&mut space);
        while gate.has_ready() {
            gate.take_ready(&mut rb);
        }
        out.extend_from_slice(rb.filled());
        if let Some(e) = gate.events() {
            events.extend(e);
        }
    }
    let framer = std::mem::replace(
        &mut gate.framer,
        Framer::new(LIMITS, Leniency::default(), false),
    );
    (out, events, framer)
}

fn refusal(stream: &[u8]) -> Option<(u32, bool, u16)> {
    let (_, events, _) = run_gate(stream, stream.len());
    events.into_iter().find_map(|e| match e {
        Passed::Refused {
            index,
            in_head,
            refusal,
        } => Some((index, in_head, refusal.status.as_u16())),
        _ => None,
    })
}

#[test]
fn clean_requests_pass_in_place_whole() {
    let stream = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\nGET /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n";
    let mut gate = Gate::new(LIMITS, Leniency::default(), false);
    assert_eq!(gate.pass_in_place(stream), stream.len());
    assert!(gate.is_clear());
    for piece in [1, 2, 3, 7, 64] {
        let (out, events, framer) = run_gate(stream, piece);
        assert_eq!(out, stream, "piece {piece}");
        assert!(events.is_empty());
        let targets: Vec<_> = framer.log.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/", "/p", "/c"]);
        assert_eq!(framer.log[2].body, b"hello");
    }
}

#[test]
fn a_head_is_mid_way_only_between_its_first_and_last_byte() {
    let mut g = Gate::new(LIMITS, Leniency::default(), false);
    assert!(!g.mid_head());
    g.pass_in_place(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!g.mid_head(), "a whole head in one read");
    assert_eq!(g.pass_in_place(b"POST / HTTP/1.1\r\nContent-Len"), 0);
    assert!(g.mid_head());
    g.pass_held(b"gth: 4\r\n\r\n");
    assert!(!g.mid_head(), "in the body");
}

#[test]
fn the_issues_desync_prefixes_no_longer_hide_a_cl_te_request() {
    let smuggled = &b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..];
    let prefixes: [&[u8]; 4] = [
        b"\r\n\r\n",
        b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET /lf HTTP/1.1\nHost: x\n\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000005\r\nhello\r\n0\r\n\r\n",
    ];
    for prefix in prefixes {
        let stream = [prefix, smuggled].concat();
        let r = refusal(&stream);
        assert!(r.is_some(), "{:?}", String::from_utf8_lossy(prefix));
        let (out, _, _) = run_gate(&stream, stream.len());
        assert!(
            memchr::memmem::find(&out, b"/s HTTP").is_none(),
            "the CL+TE head reached hyper behind {:?}",
            String::from_utf8_lossy(prefix)
        );
    }
}

#[test]
fn a_request_after_a_bare_lf_last_chunk_is_not_read_as_trailers() {
    let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\nGET /swallowed HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(refusal(stream), Some((0, false, 400)));
}

#[test]
fn what_gunicorn_refuses_is_refused_with_its_status() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0 \r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"get / HTTP/1.1\r\n\r\n", 400),
        (b"GETTTTTTTTTTTTTTTTTTTT / HTTP/1.1\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\n\r\n", 400),
        (b"GET example.com:443 HTTP/1.1\r\n\r\n", 400),
        (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let r = refusal(raw);
        assert_eq!(
            r.map(|r| r.2),
            Some(*status),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn what_gunicorn_accepts_passes() {
    let cases: &[&[u8]] = &[
        b"GET /with_\"quotes\"?foo=\"bar\" HTTP/1.1\r\n\r\n",
        b"\r\nGET /leading HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"-BLARGH /foo HTTP/1.1\r\n\r\n",
        b"GET http://user:pass@example.com:8080/foo?q=1 HTTP/1.1\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nName: \t value \t \r\nX.Custom|Pipe: ok\r\nX: caf\xc3\xa9\r\n\r\n",
    ];
    for raw in cases {
        assert_eq!(refusal(raw), None, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn a_target_hyper_would_refuse_is_escaped_and_kept() {
    let (out, events, _) = run_gate(b"GET /q\"x\"?a=<b> HTTP/1.1\r\n\r\n", 100);
    assert_eq!(out, b"GET /q%22x%22?a=%3Cb%3E HTTP/1.1\r\n\r\n");
    assert_eq!(
        events,
        [Passed::RawTarget {
            index: 0,
            target: bytes::Bytes::from_static(b"/q\"x\"?a=<b>")
        }]
    );
}

#[test]
fn a_refused_head_is_replaced_by_a_stand_in_and_nothing_after_it_passes() {
    let stream = b"GET /ok HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /after HTTP/1.1\r\n\r\n";
    for piece in [1, 5, stream.len()] {
        let (out, events, _) = run_gate(stream, piece);
        assert_eq!(
            out,
            [&b"GET /ok HTTP/1.1\r\n\r\n"[..], gate::STAND_IN].concat()
        );
        assert!(matches!(
            events[..],
            [Passed::Refused {
                index: 1,
                in_head: true,
                ..
            }]
        ));
    }
}

#[test]
fn after_a_request_that_may_switch_nothing_passes_until_the_answer() {
    let stream =
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello";
    let mut gate = Gate::new(LIMITS, Leniency::default(), true);
    let head_len = stream.len() - 7;
    assert_eq!(gate.pass_in_place(stream), head_len);
    assert!(matches!(
        gate.events().unwrap().collect::<Vec<_>>()[..],
        [Passed::MaySwitch { index: 0 }]
    ));
    assert!(gate.awaiting_switch());
    gate.decide(true);
    let mut space = [0u8; 64];
    let mut rb = tokio::io::ReadBuf::new(&mut space);
    gate.take_ready(&mut rb);
    assert_eq!(
        rb.filled(),
        b"\x81\x05hello",
        "the tunnel's bytes pass once switched"
    );

    // Answered without a switch, the same bytes are framed as HTTP again.
    let mut gate = Gate::new(LIMITS, Leniency::default(), true);
    gate.pass_in_place(stream);
    gate.events();
    gate.decide(false);
    assert!(
        !gate.has_ready() && gate.mid_head(),
        "held as the start of a head"
    );
    gate.pass_held(b"\r\n\r\n");
    assert!(
        gate.events()
            .unwrap()
            .any(|e| matches!(e, Passed::Refused { index: 1, .. }))
    );
}

#[test]
fn limits_are_the_framers() {
    let small = Limits {
        request_line: 20,
        fields: 2,
        field_size: 30,
    };
    let check = |raw: &[u8]| {
        let mut f = Framer::new(small, Leniency::default(), false);
        match f.step(raw) {
            Step::Refuse { refusal, .. } => Some(refusal.status.as_u16()),
            _ => None,
        }
    };
    assert_eq!(
        check(b"GET /aaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n"),
        Some(414)
    );
    assert_eq!(
        check(b"GET /aaaaaaaaaaaaaaaaaaaaaaa"),
        Some(414),
        "before the line ends"
    );
    assert_eq!(
        check(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
        Some(431)
    );
    assert_eq!(
        check(b"GET / HTTP/1.1\r\nA: 123456789012345678901234567890\r\n\r\n"),
        Some(431)
    );
    assert_eq!(check(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), None);
}

fn lenient_gate(lenient: Leniency, stream: &[u8]) -> (Vec<u8>, Vec<Passed>) {
    let mut gate = Gate::new(LIMITS, lenient, false);
    let n = gate.pass_in_place(stream);
    let mut out = stream[..n].to_vec();
    let mut space = vec![0u8; 1 << 16];
    let mut rb = tokio::io::ReadBuf::new(&mut space);
    while gate.has_ready() {
        gate.take_ready(&mut rb);
    }
    out.extend_from_slice(rb.filled());
    (out, gate.events().map(|e| e.collect()).unwrap_or_default())
}

#[test]
fn gunicorns_leniency_settings_rewrite_what_hyper_would_refuse() {
    let folded = b"GET / HTTP/1.1\r\nLong: one\r\n two\r\n\tthree\r\nHost: x\r\n\r\n";
    let (_, events) = lenient_gate(Leniency::default(), folded);
    assert!(
        matches!(events[..], [Passed::Refused { .. }]),
        "obs-fold refused by default"
    );
    let fold = Leniency {
        obs_fold: true,
        ..Leniency::default()
    };
    let (out, events) = lenient_gate(fold, folded);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        out,
        b"GET / HTTP/1.1\r\nLong: one two three\r\nHost: x\r\n\r\n"
    );

    let lower = b"get /x HTTP/1.1\r\n\r\n";
    let (_, events) = lenient_gate(Leniency::default(), lower);
    assert!(matches!(events[..], [Passed::Refused { .. }]));
    let any_method = Leniency {
        unconventional_method: true,
        ..Leniency::default()
    };
    assert_eq!(lenient_gate(any_method, lower).0, lower, "passed as it is");
    let casefold = Leniency {
        unconventional_method: true,
        casefold_method: true,
        ..Leniency::default()
    };
    assert_eq!(lenient_gate(casefold, lower).0, b"GET /x HTTP/1.1\r\n\r\n");
    let connect = b"connect x:1 HTTP/1.1\r\n\r\n";
    let (out, events) = lenient_gate(casefold, connect);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Passed::Closes { index: 0 })),
        "a casefolded CONNECT is a CONNECT"
    );
    assert_eq!(out, b"CONNECT x:1 HTTP/1.1\r\n\r\n");

    let spaced = b"POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc";
    let (_, events) = lenient_gate(Leniency::default(), spaced);
    assert!(matches!(events[..], [Passed::Refused { .. }]));
    let strip = Leniency {
        strip_header_spaces: true,
        ..Leniency::default()
    };
    let (out, events) = lenient_gate(strip, spaced);
    assert!(events.is_empty());
    assert_eq!(
        out, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        "and its body is framed by it"
    );

    let underscore = b"GET / HTTP/1.1\r\nX_A: 1\r\n\r\n";
    assert!(lenient_gate(Leniency::default(), underscore).1.is_empty());
    let refuse = Leniency {
        refuse_underscores: true,
        ..Leniency::default()
    };
    assert!(matches!(
        lenient_gate(refuse, underscore).1[..],
        [Passed::Refused { .. }]
    ));
}
