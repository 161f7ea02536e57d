//! Smoke test: `sluice-bench` runs every workload briefly against a real
//! `sluice serve` and `nats-server` it starts itself (with JetStream and the
//! limits), and its JSON report is sane: counts match the plan, no errors,
//! throughput above zero, percentiles in order, timelines and per-client
//! rows add up. A few seconds in all.
//!
//! Needs `nats-server` (tools/test installs it); skipped only when it is
//! absent. The `sluice` binary is taken from `SLUICE_BIN`, else from next
//! to `sluice-bench` (where `cargo test --workspace` puts it), else built
//! with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn nats_server_present() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok()
}

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"))
}

/// The `sluice` binary, built into the same target directory and profile
/// as `sluice-bench` when it is not there yet.
fn sluice_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(path);
    }
    let bench = bench_bin();
    let profile_dir = bench.parent().expect("binary has a directory");
    let candidate = profile_dir.join("sluice");
    if candidate.is_file() {
        return candidate;
    }
    let target_dir = profile_dir
        .parent()
        .expect("profile directory has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "sluice",
            "--bin",
            "sluice",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo to build the sluice binary");
    assert!(status.success(), "building the sluice binary failed");
    assert!(
        candidate.is_file(),
        "cargo built no {}",
        candidate.display()
    );
    candidate
}

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing or not a number in {value}"))
}

fn check_latency(latency: &Value, context: &str) {
    let order = [
        "min_us",
        "p50_us",
        "p90_us",
        "p99_us",
        "p99_9_us",
        "p99_99_us",
        "max_us",
    ];
    let values: Vec<f64> = order.iter().map(|f| number(latency, f)).collect();
    assert!(
        number(latency, "samples") > 0.0,
        "{context}: no latency samples"
    );
    assert!(values[0] > 0.0, "{context}: zero latency");
    for (pair, names) in values.windows(2).zip(order.windows(2)) {
        assert!(
            pair[0] <= pair[1],
            "{context}: {} {} > {} {}",
            names[0],
            pair[0],
            names[1],
            pair[1]
        );
    }
}

fn check_run(case: &Value, run: &Value) {
    let context = format!("{} / {}", case["name"], run["system"]);
    let messages = number(run, "messages");
    assert!(messages > 0.0, "{context}: no messages");
    if let Some(expected) = run["expected_messages"].as_f64() {
        assert_eq!(
            messages, expected,
            "{context}: measured messages differ from the plan"
        );
    }
    assert_eq!(
        number(run, "errors"),
        0.0,
        "{context}: errors: {}",
        run["first_error"]
    );
    assert_eq!(
        number(run, "timeouts"),
        0.0,
        "{context}: timeouts: {}",
        run["first_error"]
    );
    assert!(number(run, "msg_per_s") > 0.0, "{context}: no throughput");
    assert!(number(run, "mb_per_s") > 0.0, "{context}: no MB/s");
    check_latency(&run["latency"], &context);
    let timeline = run["timeline"].as_array().expect("timeline");
    let in_timeline: f64 = timeline.iter().map(|s| number(s, "messages")).sum();
    assert_eq!(in_timeline, messages, "{context}: timeline does not add up");
    let clients = run["clients"].as_array().expect("clients");
    let role = run["role"].as_str().expect("role");
    let by_clients: f64 = clients
        .iter()
        .filter(|c| c["role"] == role)
        .map(|c| number(c, "messages"))
        .sum();
    assert_eq!(
        by_clients, messages,
        "{context}: per-client rows do not add up"
    );
    if let Some(publish) = run["publish"].as_object() {
        let produced = publish["messages"].as_f64().expect("producer messages");
        assert!(
            produced >= messages / 2.0,
            "{context}: consumers got more than was produced"
        );
    }
}

#[test]
fn every_workload_runs_and_reports_sanely() {
    if !nats_server_present() {
        eprintln!("SKIPPED: nats-server is not installed (tools/test installs it)");
        return;
    }
    let sluice = sluice_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let chart = dir.path().join("report.html");
    let output = Command::new(bench_bin())
        .args([
            "all",
            "--messages",
            "3000",
            "--warmup",
            "0",
            "--producers",
            "2",
            "--partitions",
            "2",
        ])
        .args([
            "--batch-records",
            "100",
            "--compare",
            "jetstream",
            "--limits",
            "--limits-time",
            "200ms",
        ])
        .args(["--quiet", "--sluice-bin"])
        .arg(&sluice)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&chart)
        .output()
        .expect("run sluice-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for workload in ["publish-nats", "publish-direct", "consume", "end-to-end"] {
        assert!(
            stdout.contains(&format!("== {workload} 128 B ==")),
            "no table for {workload}:\n{stdout}"
        );
    }

    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("valid JSON");
    assert_eq!(report["tool"], "sluice-bench");
    let cases = report["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let runs = case["runs"].as_array().expect("runs");
        let systems: Vec<&str> = runs
            .iter()
            .map(|r| r["system"].as_str().unwrap_or_default())
            .collect();
        let nats_fed = matches!(
            case["workload"].as_str(),
            Some("publish-nats" | "end-to-end")
        );
        let expected: &[&str] = if nats_fed {
            &["sluice", "jetstream", "nats-echo"]
        } else {
            &["sluice", "jetstream"]
        };
        assert_eq!(systems, expected, "{}", case["name"]);
        for run in runs {
            check_run(case, run);
        }
        let ratios = &case["ratios"];
        assert!(
            number(ratios, "msg_per_s") > 0.0,
            "{}: no ratio",
            case["name"]
        );
        let limits = case["limits"].as_array().expect("limits");
        assert!(!limits.is_empty(), "{}: no limit fractions", case["name"]);
        for limit in limits {
            assert!(
                number(limit, "value") > 0.0 && number(limit, "fraction") > 0.0,
                "{limit}"
            );
        }
    }
    let machine = &report["limits"];
    assert!(number(&machine["sequential_read"], "mb_per_s") > 0.0);
    assert!(number(&machine["loopback_tcp"], "mb_per_s") > 0.0);

    let html = std::fs::read_to_string(&chart).expect("chart written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.matches("<svg").count() >= 9);
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
        "chart must be self-contained"
    );
}

#[test]
fn an_open_loop_run_counts_every_message() {
    if !nats_server_present() {
        eprintln!("SKIPPED: nats-server is not installed (tools/test installs it)");
        return;
    }
    let sluice = sluice_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let output = Command::new(bench_bin())
        .args([
            "publish-direct",
            "end-to-end",
            "--rate",
            "4000",
            "--duration",
            "1",
            "--warmup",
            "200ms",
        ])
        .args(["--quiet", "--sluice-bin"])
        .arg(&sluice)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run sluice-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sluice-bench failed: {stderr}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("valid JSON");
    for case in report["cases"].as_array().expect("cases") {
        let run = &case["runs"][0];
        check_run(case, run);
        // 4000 msg/s for 1 s, latency from the intended send times.
        let messages = number(run, "messages");
        assert!(
            (3000.0..=4400.0).contains(&messages),
            "{}: {messages} messages at 4000/s for 1 s",
            case["name"]
        );
        assert!(run["latency_of"]
            .as_str()
            .unwrap_or_default()
            .contains("intended"));
    }
}
