//! The framer against hyper on random streams: whatever the framer passes,
//! hyper must split into the same requests with the same bodies, alone and
//! behind the gate; hyper must never refuse what the framer accepted.
//!
//! `cargo test --bin ferricorn framer_and_hyper` runs a bounded number of
//! cases; `FERRICORN_FUZZ_CASES=200000` runs as many as asked.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Passed;
use super::head::Leniency;
use super::tests::{Message, run_gate_with};

/// A request as hyper handed it over, its body read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// Serve `stream` with hyper (as the worker configures it) and say what it saw.
fn hyper_reads(stream: &[u8]) -> (Vec<Seen>, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 20);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            let log = log.clone();
            async move {
                let method = req.method().to_string();
                let target = match req.uri().path_and_query() {
                    Some(pq) if req.uri().scheme().is_none() => pq.as_str().to_string(),
                    _ => req.uri().to_string(),
                };
                if let Ok(body) = req.into_body().collect().await {
                    log.lock().unwrap().push(Seen {
                        method,
                        target,
                        body: body.to_bytes().to_vec(),
                    });
                }
                Ok::<_, Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
            }
        });
        let conn = http1::Builder::new()
            .half_close(true)
            .max_headers(100)
            .serve_connection(TokioIo::new(server), svc);
        let (mut rd, mut wr) = tokio::io::split(client);
        let data = stream.to_vec();
        let writer = async move {
            let _ = wr.write_all(&data).await;
            let _ = wr.shutdown().await;
            let mut sink = Vec::new();
            let _ = rd.read_to_end(&mut sink).await;
        };
        let (result, _) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(conn, writer) })
                .await
                .expect("hyper finished within 5 s");
        let error = result.err().filter(|e| e.is_parse()).map(|e| e.to_string());
        let seen = seen.lock().unwrap().clone();
        (seen, error)
    })
}

/// The messages the framer read whole (head and body).
fn framed_whole(stream: &[u8], lenient: Leniency) -> (Vec<Message>, Vec<u8>, bool) {
    let (out, events, framer) = run_gate_with(stream, stream.len(), lenient);
    let body_refused = events
        .iter()
        .any(|e| matches!(e, Passed::Refused { in_head: false, .. }));
    let head_refused = events
        .iter()
        .any(|e| matches!(e, Passed::Refused { in_head: true, .. }));
    let mut whole = framer.log.clone();
    if body_refused || framer.mid_message() {
        whole.pop();
    }
    (whole, out, head_refused)
}

fn comparable(m: &Message) -> bool {
    // hyper drops a fragment, and refuses what the gate escapes for it.
    // Nor does it keep an absolute-form target as it came.
    m.target.starts_with('/')
        && !m
            .target
            .bytes()
            .any(|b| matches!(b, b'#' | b'"' | b'<' | b'>' | b'`'))
}

/// Check one stream; says whether it held a whole chunked message (the
/// generator must reach those often).
fn check(stream: &[u8]) -> Result<bool, TestCaseError> {
    let (whole, out, head_refused) = framed_whole(stream, Leniency::default());
    let chunked_whole = whole.iter().any(|m| m.chunked && !m.body.is_empty());
    let show = || String::from_utf8_lossy(stream).into_owned();

    // hyper alone, on the raw stream: it reads every message the framer
    // read whole, at the same boundaries (up to a target that only reaches
    // hyper escaped: alone, it refuses that one).
    let (alone, _) = hyper_reads(stream);
    let escaped = |m: &&Message| {
        m.target
            .bytes()
            .any(|b| matches!(b, b'"' | b'<' | b'>' | b'`'))
    };
    for (i, m) in whole.iter().take_while(|m| !escaped(m)).enumerate() {
        let Some(h) = alone.get(i) else {
            return Err(TestCaseError::fail(format!(
                "hyper did not read message {i} the framer accepted ({:?}) in {:?}",
                m.target,
                show()
            )));
        };
        prop_assert_eq!(
            &h.method,
            &m.method,
            "method of message {} in {:?}",
            i,
            show()
        );
        if comparable(m) {
            prop_assert_eq!(
                &h.target,
                &m.target,
                "target of message {} in {:?}",
                i,
                show()
            );
        }
        prop_assert_eq!(&h.body, &m.body, "body of message {} in {:?}", i, show());
    }

    check_behind_the_gate(stream, &whole, &out, head_refused)?;
    Ok(chunked_whole)
}

/// hyper behind the gate: exactly the messages the framer read whole (and
/// the stand-in of a refused head), and never a parse error of its own.
fn check_behind_the_gate(
    stream: &[u8],
    whole: &[Message],
    out: &[u8],
    head_refused: bool,
) -> Result<(), TestCaseError> {
    let show = || String::from_utf8_lossy(stream).into_owned();
    let (behind, error) = hyper_reads(out);
    prop_assert!(
        error.is_none(),
        "hyper refused what the gate passed: {:?} for {:?}",
        error,
        show()
    );
    let expected = whole.len() + usize::from(head_refused);
    prop_assert!(
        behind.len() == expected || behind.len() == expected + 1,
        "hyper behind the gate read {} requests, the framer {} whole (+{} stand-in) in {:?}",
        behind.len(),
        whole.len(),
        usize::from(head_refused),
        show()
    );
    for (m, h) in whole.iter().zip(&behind) {
        prop_assert!(
            h.method.eq_ignore_ascii_case(&m.method),
            "{} for {}",
            h.method,
            m.method
        );
        prop_assert_eq!(&h.body, &m.body);
    }
    Ok(())
}

/// With every gunicorn leniency on: what the gate rewrites for hyper must
/// still be what the framer read.
fn check_lenient(stream: &[u8]) -> Result<(), TestCaseError> {
    let lenient = Leniency {
        obs_fold: true,
        unconventional_method: true,
        casefold_method: true,
        strip_header_spaces: true,
        refuse_underscores: false,
    };
    let (whole, out, head_refused) = framed_whole(stream, lenient);
    check_behind_the_gate(stream, &whole, &out, head_refused)
}

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(items)
}

/// Mostly one of `good`, now and then one of `bad`.
fn mostly(
    good: &'static [&'static str],
    bad: &'static [&'static str],
) -> impl Strategy<Value = &'static str> {
    prop_oneof![30 => pick(good), 1 => pick(bad)]
}

/// One request, assembled from parts that are each valid or a known way of being wrong.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let leading = mostly(&["", "", "", "\r\n"], &["\n", "\r\n\r\n"]);
    let method = mostly(
        &["GET", "POST", "POST", "PUT", "OPTIONS", "CONNECT"],
        &["get", "-X", "G\x00T"],
    );
    let target = mostly(
        &["/", "/a?b=c", "/a#f", "http://h/p?q", "/\"q\"", "/%zz"],
        &["*", "h:1", "/a b", "/\u{e9}"],
    );
    let version = mostly(
        &["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"],
        &["HTTP/1.2", "http/1.1"],
    );
    let eol = mostly(&["\r\n"], &["\n"]);
    let field = mostly(
        &[
            "Host: x",
            "Content-Length: 5",
            "Content-Length: 0",
            "Content-Length: 05",
            "Content-Length:  5 ",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: identity, chunked",
            "Content-Length: 11",
            "X-Y: z",
            "Connection: keep-alive",
            "Upgrade: websocket",
            "Expect: 100-continue",
            "X: v",
            "X: caf\u{e9}",
            "Trailer: T",
        ],
        &[
            "Content-Length: 5,5",
            "Content-Length: -1",
            "Content-Length: 18446744073709551616",
            "Transfer-Encoding: chunked, identity",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding:\tchunked",
            "Expect: nope",
            "X : v",
            " folded",
            "X: a\x01b",
        ],
    );
    let fields = proptest::collection::vec(field, 0..5);
    // Mostly chunks whose size line matches their data, so that whole
    // chunked messages are common; sometimes a size line that is wrong.
    let chunk = (
        pick(&["hello", "hello", "x", "0123456789abcdef0123"]),
        mostly(
            &[
                "{}",
                "{}",
                "{}",
                "{:X}",
                "000{}",
                "{};x=y",
                "{} ;x=\"a b\"",
                "{}; a; b=c",
                "00000000000000000{}",
            ],
            &[
                "{} ",
                " {}",
                "{};\x01",
                "-{}",
                "+{}",
                "",
                "ffffffffffffffffff",
            ],
        ),
        mostly(&["\r\n"], &["\n"]),
        mostly(&["\r\n"], &["\n", "\r", ""]),
    )
        .prop_map(|(data, size, line_end, data_end)| {
            let hex = format!("{:x}", data.len());
            let size = if size == "{:X}" {
                hex.to_uppercase()
            } else {
                size.replace("{}", &hex)
            };
            (size, line_end, data, data_end)
        });
    let body = proptest::collection::vec(chunk, 0..3);
    let trailers = mostly(
        &["", "", "T: v\r\n", "T: v\r\nU: w\r\n"],
        &["Content-Length: 5\r\n", "T: v\n", "Host: y\r\n"],
    );
    let end = mostly(&["0\r\n", "00\r\n", "0;e=1\r\n"], &["0\n", "0 \r\n"]);
    let raw_body = pick(&["", "", "hello", "hel", "hello world"]);
    // How the body is framed: by the generator (so that whole messages are
    // common), or by whatever the random fields say.
    let framing = pick(&["none", "length", "chunked", "chunked", "fields"]);
    (
        (leading, method, target, version, eol),
        (framing, fields, body, trailers, end, raw_body),
    )
        .prop_map(
            |(
                (leading, method, target, version, eol),
                (framing, fields, chunks, trailers, end, raw_body),
            )| {
                let mut r = Vec::new();
                r.extend_from_slice(leading.as_bytes());
                r.extend_from_slice(format!("{method} {target} {version}{eol}").as_bytes());
                let frames = |f: &&str| {
                    f.starts_with("Content-Length") || f.starts_with("Transfer-Encoding")
                };
                let mut fields: Vec<String> = fields
                    .iter()
                    .filter(|f| framing == "fields" || !frames(f))
                    .map(|f| f.to_string())
                    .collect();
                match framing {
                    "length" => fields.push(format!("Content-Length: {}", raw_body.len())),
                    "chunked" => fields.push("Transfer-Encoding: chunked".into()),
                    _ => {}
                }
                let chunked = fields.iter().any(|f| f.contains("chunked"));
                for f in &fields {
                    r.extend_from_slice(f.as_bytes());
                    r.extend_from_slice(eol.as_bytes());
                }
                r.extend_from_slice(eol.as_bytes());
                if chunked {
                    for (size, line_end, data, data_end) in chunks {
                        r.extend_from_slice(format!("{size}{line_end}{data}{data_end}").as_bytes());
                    }
                    r.extend_from_slice(end.as_bytes());
                    r.extend_from_slice(trailers.as_bytes());
                    r.extend_from_slice(b"\r\n");
                } else if framing != "none" {
                    r.extend_from_slice(raw_body.as_bytes());
                }
                r
            },
        )
}

/// A few requests in a row, then a few bytes changed anywhere.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        pick(&[
            "\r", "\n", " ", "\t", ":", ";", "0", "5", "a", "\x00", ",", "\"", "\u{ff}",
        ]),
    );
    // Half the streams as built, half with a few bytes changed.
    let edits = prop_oneof![Just(Vec::new()), proptest::collection::vec(edit, 1..4),];
    (proptest::collection::vec(request(), 1..4), edits).prop_map(|(requests, edits)| {
        let mut s = requests.concat();
        for (at, op, byte) in edits {
            if s.is_empty() {
                break;
            }
            let i = at.index(s.len());
            match op {
                0 => s.insert(i, byte.as_bytes()[0]),
                1 => {
                    s.remove(i);
                }
                _ => s[i] = byte.as_bytes()[0],
            }
        }
        s
    })
}

fn cases() -> u32 {
    std::env::var("FERRICORN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn framer_and_hyper_agree_on_random_streams(s in stream()) {
        check(&s)?;
    }

    #[test]
    fn hyper_reads_what_a_lenient_gate_passes_as_the_framer_did(s in stream()) {
        check_lenient(&s)?;
    }
}

#[test]
fn the_random_streams_hold_whole_chunked_messages() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = stream();
    let mut n = 0;
    for _ in 0..300 {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        n += u32::from(check(&s).unwrap());
    }
    assert!(
        n >= 20,
        "only {n} of 300 streams held a whole chunked message"
    );
}

#[test]
fn framer_and_hyper_agree_on_the_issues_cases() {
    for s in [
        &b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\nGET /swallowed HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000005\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        b"GET /u HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        b"\r\nGET /leading HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    ] {
        check(s).unwrap();
    }
}
