//! Stopping `sluice serve` is bounded whatever NATS does: a node whose
//! nats-server has gone away (acks it cannot deliver, a client stuck
//! reconnecting) still exits soon after SIGTERM, logging what it gave up
//! waiting for. Such a node once outlived its test by a quarter of an hour.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{runtime, NatsServer, Sluice};
use sluice::client::{Client, StreamConfig};

/// How soon after SIGTERM the node must have exited.
const EXIT_WITHIN: Duration = Duration::from_secs(6);

#[test]
fn sigterm_exits_promptly_when_nats_has_gone_away() {
    let nats_server = NatsServer::start();
    let mut node = Sluice::start(&nats_server.url, 2);
    let mut client = Client::connect(&node.listen.to_string()).expect("connect");
    let mut config = StreamConfig::new("gone", "gone");
    config.partitions = Some(2);
    client.create_stream(&config).expect("create");

    // Messages that want acks, published just before NATS goes away, so
    // the node holds subscriptions and acks it can no longer deliver.
    runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        for i in 0..2_000u32 {
            let subject = if i % 2 == 0 { "gone" } else { "gone.1" };
            nats.publish_with_reply(subject, format!("_INBOX.gone.{i}"), Bytes::from("x"))
                .await
                .expect("publish");
        }
        nats.flush().await.expect("flush");
    });
    drop(nats_server);
    // Let the node's NATS client notice and start reconnecting.
    std::thread::sleep(Duration::from_millis(500));

    let Some((status, took)) = node.terminate_within(EXIT_WITHIN) else {
        panic!(
            "sluice serve did not exit within {EXIT_WITHIN:?} of SIGTERM with NATS gone; log:\n{}",
            node.log()
        );
    };
    println!("exited {took:?} after SIGTERM with NATS gone: {status}");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        node.log()
    );
    let log = node.log();
    assert!(
        log.contains("shutdown: gave up waiting for"),
        "the log says what shutdown gave up waiting for:\n{log}"
    );
}
