//! Authentication and per-stream ACLs end to end: a real `sluice serve`
//! with an `[auth]` section, driven through the client library, raw frames
//! and the `sluice` command line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::auth::{ALICE_TOKEN, AUTHENTICATE_TIMEOUT_MS, BOB_PASSWORD, NODE_TOKEN, ROOT_TOKEN};
use common::{NatsServer, Sluice};
use shards::batch::Record;
use shards::types::TimestampMs;
use sluice::client::{Client, ClientError, Credentials, FetchStart, StreamConfig};
use sluice::model::acl::{AclOperation, AclOperations, AclRule};
use sluice::protocol::error_code::ErrorCode;
use sluice::protocol::error_response::ErrorResponse;
use sluice::protocol::frame::FrameKind;
use sluice::protocol::limits::FRAME_BODY_BYTES_UNAUTHENTICATED_MAX;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn client_as(node: &Sluice, credentials: Credentials) -> Client {
    let mut client = Client::connect(&node.listen.to_string()).expect("connect");
    client.authenticate(credentials).expect("authenticate");
    client
}

fn token(token: &str) -> Credentials {
    Credentials::Token(token.to_owned())
}

fn record(value: &str) -> Record {
    Record {
        timestamp: TimestampMs(1),
        key: None,
        value: Some(Bytes::from(value.to_owned())),
        headers: Vec::new(),
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(error) => error.code().unwrap_or_else(|| panic!("no code: {error}")),
        Ok(value) => panic!("expected a refusal, got {value:?}"),
    }
}

fn rule(principal: &str, pattern: &str, ops: &[AclOperation]) -> AclRule {
    AclRule {
        principal: principal.into(),
        stream_pattern: pattern.into(),
        operations: AclOperations::of(ops.iter().copied()),
    }
}

/// Sends one raw frame and reads one answer frame: (kind, body).
fn raw_request(socket: &mut TcpStream, kind: u8, body: &[u8]) -> (u8, Vec<u8>) {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(5 + body.len() as u32).to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(&7u32.to_be_bytes());
    frame.extend_from_slice(body);
    // A refused large frame may be answered before it is all written.
    let _ = socket.write_all(&frame);
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).expect("answer header");
    let length = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    let mut answer = vec![0u8; length - 5];
    socket.read_exact(&mut answer).expect("answer body");
    (header[4], answer)
}

fn raw_error(answer: (u8, Vec<u8>)) -> ErrorCode {
    assert_eq!(answer.0, FrameKind::ErrorResponse.code(), "not an error");
    ErrorResponse::decode(&answer.1).expect("error body").code
}

/// Whether the server closed the connection (EOF, or reset).
fn closed(socket: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(socket.read(&mut byte), Ok(n) if n > 0)
}

fn raw_socket(node: &Sluice) -> TcpStream {
    let socket = TcpStream::connect(node.listen).expect("connect");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// Everything the brief asks of authentication, on one node (starting a
/// node is the slow part): refusals before and without authentication, the
/// unauthenticated frame limit, failures that leave other clients alone,
/// grants and revokes taking effect, Metadata filtering, metrics, the CLI,
/// and ACLs surviving a restart.
#[test]
fn authentication_and_acls_end_to_end() {
    let nats_server = NatsServer::start();
    let mut node = Sluice::start_with_auth(&nats_server.url, 2);

    // A connection that never authenticates is closed after the
    // authentication deadline; checked at the end.
    let silent = {
        let mut socket = raw_socket(&node);
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        std::thread::spawn(move || {
            let started = Instant::now();
            let was_closed = closed(&mut socket);
            (was_closed, started.elapsed())
        })
    };

    // Any request before Authenticate: AuthRequired, connection closed.
    let mut socket = raw_socket(&node);
    let metadata_body = sluice::protocol::metadata::MetadataRequest::default().encode();
    let answer = raw_request(
        &mut socket,
        FrameKind::MetadataRequest.code(),
        &metadata_body,
    );
    assert_eq!(raw_error(answer), ErrorCode::AuthRequired);
    assert!(
        closed(&mut socket),
        "connection must close after AuthRequired"
    );

    // Before authenticating, frames are limited to 64 KiB.
    let mut socket = raw_socket(&node);
    let big = vec![0u8; FRAME_BODY_BYTES_UNAUTHENTICATED_MAX + 1];
    let answer = raw_request(&mut socket, FrameKind::AuthenticateRequest.code(), &big);
    assert_eq!(raw_error(answer), ErrorCode::FrameTooLarge);

    // The client library says the same without credentials.
    let mut anonymous = Client::connect(&node.listen.to_string()).expect("connect");
    assert_eq!(code_of(anonymous.metadata()), ErrorCode::AuthRequired);

    // Superuser by token, user by Argon2-hashed password.
    let mut root = client_as(&node, token(ROOT_TOKEN));
    assert_eq!(root.principal(), Some("root"));
    let bob = client_as(
        &node,
        Credentials::UserPassword {
            username: "bob".into(),
            password: BOB_PASSWORD.into(),
        },
    );
    assert_eq!(bob.principal(), Some("bob"));
    let mut config = StreamConfig::new("orders.eu", "orders.eu");
    config.partitions = Some(2);
    root.create_stream(&config).expect("root creates");
    root.create_stream(&StreamConfig::new("audit", "audit"))
        .expect("root creates");

    // Bad credentials: AuthFailed after a delay, while another client goes
    // on undisturbed.
    let mut alice = client_as(&node, token(ALICE_TOKEN));
    assert_eq!(alice.principal(), Some("alice"));
    let guesser = {
        let addr = node.listen.to_string();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            for guess in ["wrong-token-0123456789", "another-wrong-token-42"] {
                let mut client = Client::connect(&addr).expect("connect");
                results.push(code_of(client.authenticate(token(guess))));
            }
            let mut client = Client::connect(&addr).expect("connect");
            results.push(code_of(client.authenticate(Credentials::UserPassword {
                username: "bob".into(),
                password: "not bob's password".into(),
            })));
            results
        })
    };
    let started = Instant::now();
    let mut undisturbed = 0;
    while !guesser.is_finished() && started.elapsed() < IO_TIMEOUT {
        let before = Instant::now();
        alice
            .metadata()
            .expect("alice's metadata while someone guesses");
        assert!(
            before.elapsed() < Duration::from_secs(5),
            "a failing login held up another client for {:?}",
            before.elapsed()
        );
        undisturbed += 1;
    }
    assert_eq!(
        guesser.join().expect("guesser"),
        vec![ErrorCode::AuthFailed; 3]
    );
    assert!(undisturbed > 0);

    // Alice has no rule yet: refused, and names the operation and stream.
    let denied = alice.publish("orders.eu", 0, &[record("a")]);
    match &denied {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(*code, ErrorCode::NotAuthorized);
            assert!(
                message.contains("publish") && message.contains("orders.eu"),
                "{message}"
            );
        }
        other => panic!("expected NotAuthorized, got {other:?}"),
    }
    assert_eq!(
        code_of(alice.create_stream(&StreamConfig::new("mine", "mine"))),
        ErrorCode::NotAuthorized
    );
    assert_eq!(
        code_of(alice.delete_stream("audit")),
        ErrorCode::NotAuthorized
    );
    assert!(alice.metadata().expect("metadata").streams.is_empty());
    assert_eq!(
        code_of(alice.grant_acl(&rule("alice", "*", &[AclOperation::Admin]))),
        ErrorCode::NotAuthorized
    );

    // A grant takes effect at once, on every shard.
    root.grant_acl(&rule(
        "alice",
        "orders.*",
        &[AclOperation::Publish, AclOperation::Fetch],
    ))
    .expect("grant");
    for partition in 0..2 {
        alice
            .publish("orders.eu", partition, &[record("granted")])
            .expect("alice publishes after the grant");
        let fetched = alice
            .fetch(
                "orders.eu",
                partition,
                FetchStart::Earliest,
                1 << 20,
                Duration::ZERO,
            )
            .expect("alice fetches");
        assert_eq!(fetched.records.len(), 1);
    }
    let visible: Vec<String> = alice
        .metadata()
        .expect("metadata")
        .streams
        .iter()
        .map(|s| s.config.name.clone())
        .collect();
    assert_eq!(visible, vec!["orders.eu".to_owned()]);
    let named = alice.metadata_for(&["audit"]).expect("metadata");
    assert_eq!(named.streams[0].error, Some(ErrorCode::NotAuthorized));
    assert_eq!(
        code_of(alice.fetch("audit", 0, FetchStart::Earliest, 1 << 20, Duration::ZERO)),
        ErrorCode::NotAuthorized
    );

    // Cursors are checked as fetches of the stream they name; the internal
    // cursor stream itself is for superusers only, whatever the patterns.
    alice
        .set_cursor("billing", "orders.eu", 0, shards::types::Offset(1))
        .expect("alice keeps a cursor on a stream she may fetch");
    assert_eq!(
        alice
            .fetch_cursor("billing", "orders.eu", 0)
            .expect("fetch cursor"),
        Some(shards::types::Offset(1))
    );
    assert_eq!(
        code_of(alice.set_cursor("billing", "audit", 0, shards::types::Offset(0))),
        ErrorCode::NotAuthorized
    );
    root.grant_acl(&rule("alice", "*", &[AclOperation::Fetch]))
        .expect("grant");
    assert_eq!(
        code_of(alice.fetch(
            "__cursors",
            0,
            FetchStart::Earliest,
            1 << 20,
            Duration::ZERO
        )),
        ErrorCode::NotAuthorized
    );
    root.revoke_acl(&rule("alice", "*", &[])).expect("revoke");

    // A revoke takes effect at once too.
    root.revoke_acl(&rule("alice", "orders.*", &[AclOperation::Publish]))
        .expect("revoke");
    assert_eq!(
        code_of(alice.publish("orders.eu", 0, &[record("revoked")])),
        ErrorCode::NotAuthorized
    );
    alice
        .fetch(
            "orders.eu",
            1,
            FetchStart::Earliest,
            1 << 20,
            Duration::ZERO,
        )
        .expect("fetch is still granted");
    assert_eq!(
        code_of(root.revoke_acl(&rule("nobody", "x", &[]))),
        ErrorCode::InvalidRequest
    );

    // The command line: authenticates with --token / SLUICE_TOKEN.
    let sluice = |args: &[&str], env_token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg("--server")
            .arg(node.listen.to_string())
            .args(args)
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_USER")
            .env_remove("SLUICE_PASSWORD");
        if let Some(token) = env_token {
            command.env("SLUICE_TOKEN", token);
        }
        command.output().expect("run sluice")
    };
    let out = sluice(
        &[
            "--token",
            ROOT_TOKEN,
            "acl",
            "grant",
            "--principal",
            "bob",
            "--stream",
            "audit",
            "--ops",
            "fetch",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let out = sluice(&["acl", "list"], Some(ROOT_TOKEN));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(listed.contains("alice      orders.*  fetch"), "{listed}");
    assert!(listed.contains("bob        audit     fetch"), "{listed}");
    let out = sluice(&["stream", "list"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AuthRequired") && stderr.contains("--token"),
        "{stderr}"
    );
    let out = sluice(&["stream", "list"], Some(ALICE_TOKEN));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders.eu"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("audit"));

    // Failures and denials are counted.
    assert!(node.metric("sluice_auth_failures_total") >= 5);
    assert!(node.metric("sluice_authorization_denials_total") >= 6);
    assert!(
        !node.log().contains(ALICE_TOKEN) && !node.log().contains(BOB_PASSWORD),
        "a secret reached the log"
    );

    // Other nodes authenticate with the node token and may do everything.
    let mut peer = client_as(&node, token(NODE_TOKEN));
    assert_eq!(peer.principal(), Some("_node"));
    peer.fetch("audit", 0, FetchStart::Earliest, 1 << 20, Duration::ZERO)
        .expect("a node may fetch anything");

    let (was_closed, after) = silent.join().expect("silent connection");
    assert!(was_closed, "an unauthenticated connection stayed open");
    assert!(
        after >= Duration::from_millis(AUTHENTICATE_TIMEOUT_MS / 2)
            && after < Duration::from_secs(40),
        "closed after {after:?}"
    );

    // ACLs are metadata: they survive a restart.
    drop((alice, root, bob, anonymous, peer));
    node.restart();
    let mut alice = client_as(&node, token(ALICE_TOKEN));
    alice
        .fetch(
            "orders.eu",
            0,
            FetchStart::Earliest,
            1 << 20,
            Duration::ZERO,
        )
        .expect("fetch still granted after restart");
    assert_eq!(
        code_of(alice.publish("orders.eu", 0, &[record("x")])),
        ErrorCode::NotAuthorized
    );
    let mut root = client_as(&node, token(ROOT_TOKEN));
    assert_eq!(
        root.list_acls(Some("alice")).expect("list"),
        vec![rule("alice", "orders.*", &[AclOperation::Fetch])]
    );
}

/// Without `[auth]`, Authenticate accepts anything as `anonymous` and
/// nothing is checked (the behaviour before authentication existed).
#[test]
fn without_auth_everyone_is_anonymous_and_unrestricted() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    let mut client = Client::connect(&node.listen.to_string()).expect("connect");
    assert_eq!(
        client
            .authenticate(token("anything"))
            .expect("authenticate"),
        "anonymous"
    );
    client
        .create_stream(&StreamConfig::new("free", "free"))
        .expect("create");
    client.publish("free", 0, &[record("x")]).expect("publish");
    client
        .grant_acl(&rule("alice", "free", &[AclOperation::Fetch]))
        .expect("ACLs can be prepared before auth is turned on");
    let mut plain = Client::connect(&node.listen.to_string()).expect("connect");
    assert_eq!(plain.metadata().expect("metadata").streams.len(), 1);
}

/// `sluice hash-password` makes a hash the server accepts, and `--help`
/// never shows a secret taken from the environment.
#[test]
fn hash_password_and_help_keep_secrets() {
    use std::process::Stdio;
    let mut child =
        sluice::process::die_with_parent(&mut Command::new(env!("CARGO_BIN_EXE_sluice")))
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sluice hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret pass\n")
        .expect("write password");
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).expect("utf-8");
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let section: sluice::auth::AuthFileConfig = toml::from_str(&format!(
        "enabled = true\nusers = [{{ username = \"u\", password_hash = \"{hash}\" }}]"
    ))
    .expect("section");
    let auth = sluice::auth::Authenticator::from_config(&section).expect("accepted");
    let login = |password: &str| {
        auth.verify_blocking(&sluice::auth::Presented::Password {
            username: "u".into(),
            password: password.into(),
        })
    };
    assert_eq!(login("s3cret pass").as_deref(), Some("u"));
    assert_eq!(login("s3cret pass\n"), None);

    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .env("SLUICE_TOKEN", "token-from-env-xyz")
        .env("SLUICE_PASSWORD", "password-from-env-xyz")
        .output()
        .expect("sluice --help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--token"), "{text}");
    assert!(!text.contains("from-env-xyz"), "{text}");
}

/// ACLs are cluster metadata: a rule granted through one node (a follower,
/// whose write is forwarded to the metadata leader) holds on the other, and
/// both nodes authenticate the same principals.
#[test]
fn acls_hold_on_every_node_of_a_cluster() {
    let nats_server = NatsServer::start();
    let first = Sluice::start_with_auth(&nats_server.url, 1);
    let second = Sluice::start_with_config(
        &nats_server.url,
        1,
        &format!(
            "node_id = 2\njoin = \"{}\"\n{}",
            first.raft_addr(),
            common::auth::auth_section()
        ),
    );
    let mut root_first = client_as(&first, token(ROOT_TOKEN));
    root_first
        .create_stream(&StreamConfig::new("shared", "shared"))
        .expect("create");
    let mut root_second = client_as(&second, token(ROOT_TOKEN));
    root_second
        .grant_acl(&rule("alice", "shared", &[AclOperation::Fetch]))
        .expect("grant through the second node");
    let mut alice_first = client_as(&first, token(ALICE_TOKEN));
    // The first node applies the rule as soon as raft tells it (bounded).
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let visible = alice_first.metadata().expect("metadata").streams.len();
        if visible == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grant never reached the first node; logs:\n{}\n---\n{}",
            first.log(),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    alice_first
        .fetch("shared", 0, FetchStart::Earliest, 1 << 20, Duration::ZERO)
        .expect("alice fetches on the first node");
    assert_eq!(
        code_of(alice_first.publish("shared", 0, &[record("x")])),
        ErrorCode::NotAuthorized
    );
    assert_eq!(
        root_first.list_acls(None).expect("list"),
        root_second.list_acls(None).expect("list")
    );

    // Replication passes the gate too: the follower authenticates with the
    // node token, so an `All` publish on a two-replica stream commits.
    let mut replicated = StreamConfig::new("replicated", "replicated");
    replicated.replication_factor = Some(2);
    root_first.create_stream(&replicated).expect("create RF 2");
    let started = Instant::now();
    root_first
        .publish_with_policy(
            "replicated",
            0,
            &[record("on two nodes")],
            sluice::protocol::envelope::AckPolicy::All,
        )
        .expect("publish acked by both replicas");
    let took = started.elapsed();
    assert_eq!(
        first.metric("sluice_auth_failures_total") + second.metric("sluice_auth_failures_total"),
        0,
        "a node failed to authenticate; logs:\n{}\n---\n{}",
        first.log(),
        second.log()
    );
    eprintln!("RF 2 publish with ack All under authentication: {took:?}");
}
