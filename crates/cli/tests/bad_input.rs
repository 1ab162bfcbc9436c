//! Bad input gets a clear error, and the index keeps serving.

mod common;

use std::time::Duration;

use common::*;
use iroh::{endpoint::ConnectionError, Endpoint};
use peernet_index::frame_io::{read_frame, write_frame};
use peernet_proto::{
    index::{close_code, ErrorCode, Join, PeerAddr, Request, Response, ALPN},
    limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME},
    ticket::Ticket,
};

async fn endpoint() -> Endpoint {
    test_endpoint(vec![]).await.0
}

async fn ask(ep: &Endpoint, ticket: &Ticket, req: &Request) -> Response {
    let conn = ep.connect(ticket.index.to_endpoint_addr(), ALPN).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, req, MAX_REQUEST_FRAME).await.unwrap();
    send.finish().unwrap();
    read_frame(&mut recv, MAX_RESPONSE_FRAME).await.unwrap()
}

fn join(ep: &Endpoint, ticket: &Ticket, key: &peernet_proto::key::NetworkKey, nick: &str) -> Request {
    Request::Join(Join {
        nickname: nick.into(),
        proof: key.join_proof(&ep.id(), &ticket.index.id),
        addr: PeerAddr { id: ep.id(), ip: ep.bound_sockets(), relay: None },
    })
}

/// Sends raw bytes on a fresh connection and returns how the index closed it.
async fn send_raw(ep: &Endpoint, ticket: &Ticket, bytes: &[u8]) -> (u64, String) {
    let conn = ep.connect(ticket.index.to_endpoint_addr(), ALPN).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().ok();
    let _ = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(1024)).await;
    match tokio::time::timeout(Duration::from_secs(30), conn.closed()).await.expect("index closes the connection") {
        ConnectionError::ApplicationClosed(close) => (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).to_string()),
        other => panic!("expected an application close, got {other}"),
    }
}

/// Acceptance: malformed frame, oversized length prefix, wrong network key
/// and a taken nickname each get their clear error, and a valid request
/// afterwards succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_survives_bad_frames_and_bad_members() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let alice = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &[]);
    let ticket: Ticket = index.ticket.parse().unwrap();
    let ep = endpoint().await;

    // A length prefix far over the limit: closed before any body is read.
    let (code, reason) = send_raw(&ep, &ticket, &u32::MAX.to_be_bytes()).await;
    assert_eq!(code, close_code::TOO_LARGE as u64);
    assert!(reason.contains("exceeds the limit"), "{reason}");

    // A frame whose body is garbage.
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
    let (code, reason) = send_raw(&ep, &ticket, &garbage).await;
    assert_eq!(code, close_code::MALFORMED as u64);
    assert!(reason.contains("malformed"), "{reason}");

    // A frame that ends early.
    let (code, _) = send_raw(&ep, &ticket, &[0, 0, 0, 10, 1]).await;
    assert_eq!(code, close_code::MALFORMED as u64);

    // The wrong network key.
    let wrong = peernet_proto::key::NetworkKey::generate();
    match ask(&ep, &ticket, &join(&ep, &ticket, &wrong, "mallory")).await {
        Response::Error { code: ErrorCode::NotMember, message } => {
            assert!(message.contains("not a member of this network"), "{message}")
        }
        other => panic!("expected NotMember, got {other:?}"),
    }
    // Without a join, nothing is answered.
    match ask(&ep, &ticket, &Request::Search { query: "x".into(), limit: 5 }).await {
        Response::Error { code: ErrorCode::NotJoined, .. } => {}
        other => panic!("expected NotJoined, got {other:?}"),
    }

    // A nickname held by another online peer.
    match ask(&ep, &ticket, &join(&ep, &ticket, &ticket.network_key, "alice")).await {
        Response::Error { code: ErrorCode::NicknameTaken, message } => assert!(message.contains("taken"), "{message}"),
        other => panic!("expected NicknameTaken, got {other:?}"),
    }

    // After all that, valid requests work, for a new client and an old one.
    assert!(matches!(ask(&ep, &ticket, &join(&ep, &ticket, &ticket.network_key, "tester")).await, Response::Joined { .. }));
    assert!(matches!(ask(&ep, &ticket, &Request::Search { query: "x".into(), limit: 5 }).await, Response::Hits(_)));
    let nicks = tokio::task::spawn_blocking(move || online_nicks(&alice)).await.unwrap();
    assert!(nicks.contains(&"tester".to_string()));
    ep.close().await;
}

/// Acceptance: nickname taken, unknown file and no daemon, through the CLI.
#[test]
fn cli_errors_are_one_clear_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let alice = Daemon::peer("alice", &tmp.path().join("a"), &index.ticket, &[]);

    // A second "alice" is refused at start-up.
    let out = cli(&tmp.path().join("b"), &["up", "--join", &index.ticket, "--nick", "alice", "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nickname 'alice' is taken"), "{err}");

    // A second daemon on alice's data directory says who runs there.
    let out = cli(&alice.data_dir, &["up", "--join", &index.ticket, "--nick", "alice2", "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("already runs on this data directory (pid {})", alice.pid())), "{err}");

    // Unknown file.
    let err = alice.fails(&["get", "no-such-file.bin"]);
    assert!(err.contains("no online peer shares a file named or hashed 'no-such-file.bin'"), "{err}");
    let err = alice.fails(&["unshare", "no-such-file.bin"]);
    assert!(err.contains("you do not share a file"), "{err}");
    let err = alice.fails(&["share", "/definitely/not/here"]);
    assert!(err.contains("cannot share /definitely/not/here"), "{err}");

    // No daemon for this data dir.
    let out = cli(&tmp.path().join("nobody"), &["search", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no peernet daemon is running") && err.contains("peernet up"), "{err}");
    // Every error is one line.
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Output to a pipe its reader closed (`peernet status | head -1`)
    // ends the command quietly, not with a panic.
    let mut status = std::process::Command::new(BIN)
        .arg("status")
        .env("PEERNET_DATA_DIR", &alice.data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(status.stdout.take());
    let mut err = String::new();
    std::io::Read::read_to_string(status.stderr.as_mut().unwrap(), &mut err).unwrap();
    let ended = status.wait().unwrap();
    assert!(!err.contains("panicked") && ended.code() != Some(101), "a closed pipe is not a crash: {ended:?} {err}");

    // The daemon kept serving through all of it.
    assert_eq!(online_nicks(&alice), ["alice"]);
}

/// The control API refuses requests without the bearer token.
#[test]
fn control_api_requires_the_token() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let host = Daemon::host("root", &tmp.path().join("host"), &[]);
    let info = host.control_json();
    let addr = info["addr"].as_str().unwrap();
    let request = |auth: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET /v1/status HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    assert!(request("").starts_with("HTTP/1.1 401"));
    assert!(request("Authorization: Bearer wrong\r\n").starts_with("HTTP/1.1 401"));
    let token = info["token"].as_str().unwrap();
    assert!(request(&format!("Authorization: Bearer {token}\r\n")).starts_with("HTTP/1.1 200"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(host.data_dir.join("control.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may read the token");
    }
}

/// A client that opens a request stream and never completes its frame is
/// cut off (so it cannot hold the index's slots), and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Daemon::index(&tmp.path().join("index"));
    let ticket: Ticket = index.ticket.parse().unwrap();
    let ep = endpoint().await;
    let conn = ep.connect(ticket.index.to_endpoint_addr(), ALPN).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // Half a length prefix, then silence.
    send.write_all(&[0, 0]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(60), conn.closed()).await.expect("the index gives up on us");
    // Two deadlines of the same length cut it off, whichever comes first:
    // the frame's (10 s from the stream's opening) and, since this
    // connection never joined, the join deadline (10 s from its opening).
    match closed {
        ConnectionError::ApplicationClosed(close) => {
            let (code, reason) = (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).to_string());
            let frame = code == close_code::MALFORMED as u64 && reason.contains("not received within");
            let join = code == close_code::JOIN_TIMEOUT as u64 && reason.contains("no successful Join");
            assert!(frame || join, "cut off for another reason: code {code}, {reason}");
        }
        other => panic!("expected an application close, got {other}"),
    }
    let other = endpoint().await;
    assert!(matches!(ask(&other, &ticket, &join(&other, &ticket, &ticket.network_key, "patient")).await, Response::Joined { .. }));
}
