//! KIP-101's two failure scenarios on real [`PartitionLog`]s (one directory
//! per replica, replication done by hand with `read`/`append_replicated`):
//! a returning replica that truncates to its high-watermark checkpoint
//! loses committed data (scenario 1) or keeps a tail the new leader never
//! had, forking the log (scenario 2); the same replica truncating by leader
//! epoch (`end_offset_for_epoch` + `follower_truncation_offset`) keeps every
//! committed record and ends with a log identical to the leader's.

mod common;

use std::path::Path;

use bytes::Bytes;
use shards::batch::Record;
use shards::epoch_cache::{follower_truncation_offset, Truncation};
use shards::log::{CommitMode, LogConfig, PartitionLog};
use shards::testing::{read_records, run_on_executor};
use shards::types::{LeaderEpoch, Offset, TimestampMs};

use common::release_closed_files;

/// Most OffsetForLeaderEpoch round trips one truncation may take.
const TRUNCATION_ROUNDS_MAX: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    HighWatermark,
    LeaderEpoch,
}

async fn open(dir: &Path) -> PartitionLog {
    let mut config = LogConfig::new(dir);
    config.commit = CommitMode::Replicated;
    let (log, report) = PartitionLog::open(config).await.expect("open");
    assert!(!report.mid_log_corruption);
    log
}

/// A crash and restart: the high watermark comes back from its checkpoint.
async fn restart(log: PartitionLog, dir: &Path) -> PartitionLog {
    log.close().await.expect("close");
    release_closed_files().await;
    open(dir).await
}

async fn lead(log: &PartitionLog, epoch: i32, value: &str) -> Offset {
    log.set_leader_epoch(LeaderEpoch(epoch));
    let record = Record {
        timestamp: TimestampMs(1_000),
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Vec::new(),
    };
    log.append_records(&[record])
        .await
        .expect("append")
        .base_offset
}

/// The follower copies what the leader has committed past its own end and
/// takes the leader's high watermark (capped at its own end).
async fn replicate(leader: &PartitionLog, follower: &PartitionLog) {
    copy(leader, follower).await;
    follower.advance_high_watermark(leader.high_watermark().min(follower.log_end_offset()));
}

/// A fetch whose response (and so the high watermark it carries) the
/// follower has not processed yet: the data only.
async fn copy(leader: &PartitionLog, follower: &PartitionLog) {
    while let Some(slice) = leader
        .read(follower.log_end_offset(), 1 << 20)
        .expect("leader read")
    {
        let bytes = slice.read_bytes().await.expect("read bytes");
        follower
            .append_replicated(&bytes)
            .await
            .expect("append replicated");
    }
}

/// What a returning follower does before it fetches from `leader`.
async fn truncate_on_return(follower: &PartitionLog, leader: &PartitionLog, method: Method) {
    let target = match method {
        Method::HighWatermark => follower.high_watermark(),
        Method::LeaderEpoch => {
            let mut asked = follower.latest_epoch();
            let mut target = None;
            for _ in 0..TRUNCATION_ROUNDS_MAX {
                // The OffsetForLeaderEpoch round trip.
                let leader_answer = asked.and_then(|epoch| leader.end_offset_for_epoch(epoch));
                let own_answer =
                    leader_answer.and_then(|(epoch, _)| follower.end_offset_for_epoch(epoch));
                match follower_truncation_offset(
                    leader_answer,
                    own_answer,
                    follower.log_end_offset(),
                    follower.high_watermark(),
                ) {
                    Truncation::Complete(offset) => {
                        target = Some(offset);
                        break;
                    }
                    Truncation::AskAgain { offset, epoch } => {
                        follower.truncate_to(offset).await.expect("truncate");
                        asked = Some(epoch);
                    }
                }
            }
            target.expect("truncation converges")
        }
    };
    follower.truncate_to(target).await.expect("truncate");
}

/// Every record value, committed or not, in offset order.
async fn values(log: &PartitionLog) -> Vec<String> {
    log.advance_high_watermark(log.log_end_offset());
    read_records(log, 1 << 20)
        .await
        .into_iter()
        .map(|record| String::from_utf8_lossy(&record.value.unwrap_or_default()).into_owned())
        .collect()
}

/// KIP-101 scenario 1. A leads epoch 0 with m1, m2, both on B; A's high
/// watermark is 2 (m2 is committed and acked), B has heard only of 1. B
/// restarts; A dies before B fetches again, B leads epoch 1 and takes m3; A
/// returns as a follower. Returns (A's values, B's values).
async fn scenario_one(root: &Path, method: Method) -> (Vec<String>, Vec<String>) {
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    let a = open(&a_dir).await;
    let b = open(&b_dir).await;
    lead(&a, 0, "m1").await;
    lead(&a, 0, "m2").await;
    a.advance_high_watermark(Offset(1));
    replicate(&a, &b).await;
    a.advance_high_watermark(Offset(2));
    copy(&a, &b).await; // B has m2 but still believes the HW is 1
    a.checkpoint_high_watermark().await.expect("checkpoint");
    b.checkpoint_high_watermark().await.expect("checkpoint");
    assert_eq!(b.log_end_offset(), Offset(2));

    let b = restart(b, &b_dir).await;
    assert_eq!(b.high_watermark(), Offset(1));
    truncate_on_return(&b, &a, method).await;
    a.close().await.expect("close"); // A dies before B fetches again
    release_closed_files().await;
    lead(&b, 1, "m3").await;
    b.advance_high_watermark(b.log_end_offset()); // ISR = {B}

    let a = open(&a_dir).await;
    truncate_on_return(&a, &b, method).await;
    replicate(&b, &a).await;
    let result = (values(&a).await, values(&b).await);
    a.close().await.expect("close");
    b.close().await.expect("close");
    release_closed_files().await;
    result
}

/// KIP-101 scenario 2. A leads epoch 0 with m1, m2 and commits both (HW
/// 2); B held m2 only in its page cache and loses it in a power failure
/// that takes both down. B comes back first, leads epoch 1 and commits m3
/// at offset 1; A returns as a follower.
async fn scenario_two(root: &Path, method: Method) -> (Vec<String>, Vec<String>) {
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    let a = open(&a_dir).await;
    let b = open(&b_dir).await;
    lead(&a, 0, "m1").await;
    lead(&a, 0, "m2").await;
    a.advance_high_watermark(Offset(2));
    replicate(&a, &b).await;
    a.checkpoint_high_watermark().await.expect("checkpoint");
    b.advance_high_watermark(Offset(1));
    b.checkpoint_high_watermark().await.expect("checkpoint");
    // The power failure: B's unflushed m2 is gone.
    assert_eq!(b.truncate_to(Offset(1)).await.expect("lose m2"), Offset(1));

    let b = restart(b, &b_dir).await;
    lead(&b, 1, "m3").await;
    b.advance_high_watermark(b.log_end_offset()); // ISR = {B}
    let a = restart(a, &a_dir).await;
    assert_eq!(a.high_watermark(), Offset(2));
    truncate_on_return(&a, &b, method).await;
    replicate(&b, &a).await;
    let result = (values(&a).await, values(&b).await);
    a.close().await.expect("close");
    b.close().await.expect("close");
    release_closed_files().await;
    result
}

#[test]
fn scenario_one_truncating_to_the_high_watermark_loses_a_committed_record() {
    for method in [Method::HighWatermark, Method::LeaderEpoch] {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().to_path_buf();
        let (a, b) = run_on_executor(async move { scenario_one(&path, method).await });
        match method {
            Method::HighWatermark => {
                // m2 was committed (A's HW was 2), yet the new leader lacks it
                // and the two replicas disagree at offset 1.
                assert!(!b.contains(&"m2".to_string()), "{b:?}");
                assert_ne!(a, b, "the replicas should have forked");
            }
            Method::LeaderEpoch => {
                assert_eq!(b, ["m1", "m2", "m3"]);
                assert_eq!(a, b);
            }
        }
    }
}

#[test]
fn scenario_two_truncating_to_the_high_watermark_forks_the_log() {
    for method in [Method::HighWatermark, Method::LeaderEpoch] {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().to_path_buf();
        let (a, b) = run_on_executor(async move { scenario_two(&path, method).await });
        assert_eq!(b, ["m1", "m3"]);
        match method {
            Method::HighWatermark => {
                // A kept m2 at offset 1 where the leader has m3.
                assert_eq!(a, ["m1", "m2"]);
            }
            Method::LeaderEpoch => assert_eq!(a, b),
        }
    }
}
