//! The `sluice` binary from the outside: help for every command, and the
//! advice it gives when no server is there.

use std::net::TcpListener;
use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_NATS_URL")
        .output()
        .expect("run sluice")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn help_teaches_every_command() {
    let output = sluice(&["--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for needle in [
        "Example session:",
        "serve",
        "stream",
        "publish",
        "consume",
        "SLUICE_SERVER",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    for command in [
        &["serve"][..],
        &["stream"],
        &["stream", "create"],
        &["stream", "list"],
        &["stream", "describe"],
        &["stream", "delete"],
        &["publish"],
        &["consume"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let output = sluice(&args);
        assert!(output.status.success(), "{args:?} failed");
        let text = stdout(&output);
        assert!(
            text.contains("Example"),
            "{args:?} help has no example:\n{text}"
        );
        assert!(text.contains("Usage: sluice"), "{args:?}:\n{text}");
    }
}

#[test]
fn flags_named_in_the_docs_exist() {
    let create = stdout(&sluice(&["stream", "create", "--help"]));
    for flag in [
        "--subject",
        "--group",
        "--partitions",
        "--replication-factor",
        "--retention-age",
        "--retention-bytes",
        "--retention-messages",
        "--compact",
    ] {
        assert!(create.contains(flag), "stream create lacks {flag}");
    }
    let serve = stdout(&sluice(&["serve", "--help"]));
    for flag in [
        "--config",
        "--data-dir",
        "--nats-url",
        "--listen",
        "--admin",
        "--cores",
        "--control-core",
        "--sync",
        "--max-connections",
        "[limits]",
    ] {
        assert!(serve.contains(flag), "serve lacks {flag}");
    }
    let publish = stdout(&sluice(&["publish", "--help"]));
    for flag in [
        "--key",
        "--header",
        "--count",
        "--nats-url",
        "SLUICE_NATS_URL",
    ] {
        assert!(publish.contains(flag), "publish lacks {flag}");
    }
    let consume = stdout(&sluice(&["consume", "--help"]));
    for flag in [
        "--partition",
        "--from",
        "--count",
        "--follow",
        "--format",
        "--cursor",
    ] {
        assert!(consume.contains(flag), "consume lacks {flag}");
    }
}

#[test]
fn no_server_says_what_to_do() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let output = sluice(&["stream", "list", "--server", &addr]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: cannot connect to {addr}: connection refused — is `sluice serve` running? (set --server or SLUICE_SERVER)"
        )
    );
}

#[test]
fn bad_flag_values_are_refused_before_anything_runs() {
    for args in [
        &["consume", "s", "--from", "yesterday"][..],
        &[
            "stream",
            "create",
            "s",
            "--subject",
            "s",
            "--retention-bytes",
            "10XB",
        ],
        &["serve", "--sync", "sometimes"],
    ] {
        let output = sluice(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("expected") || stderr.contains("invalid"),
            "{args:?}: {stderr}"
        );
    }
}
