//! What `sluice serve` writes to its log: plain text without ANSI colour
//! codes when stderr is a file (the test harness sends it to one), or one
//! JSON object per line with `log_format = "json"` (or `--log-format json`).

mod common;

use common::{NatsServer, Sluice};

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    let log = node.log();
    assert!(log.contains("sluice is serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{log:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let nats_server = NatsServer::start();
    let node = Sluice::start_with_config(&nats_server.url, 1, "log_format = \"json\"");
    let log = node.log();
    let mut serving = false;
    for line in log.lines().filter(|line| !line.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(value.get("level").is_some(), "{line}");
        assert!(value.get("timestamp").is_some(), "{line}");
        serving |= value["fields"]["message"] == "sluice is serving";
    }
    assert!(serving, "no \"sluice is serving\" event in:\n{log}");
}
