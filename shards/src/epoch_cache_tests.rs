use super::*;

fn e(epoch: i32) -> LeaderEpoch {
    LeaderEpoch(epoch)
}

fn o(offset: u64) -> Offset {
    Offset(offset)
}

#[test]
fn assign_adds_an_entry_only_when_an_epoch_begins() {
    let mut cache = EpochCache::default();
    assert!(
        !cache.assign(LeaderEpoch::NONE, o(0)),
        "unreplicated batches carry no epoch"
    );
    assert!(cache.assign(e(0), o(0)));
    assert!(!cache.assign(e(0), o(5)), "same epoch continues");
    assert!(cache.assign(e(3), o(9)));
    assert!(
        !cache.assign(e(2), o(12)),
        "a lower epoch is never recorded"
    );
    assert!(!cache.assign(LeaderEpoch::NONE, o(12)));
    assert_eq!(cache, EpochCache::from_entries(&[(0, 0), (3, 9)]));
    assert_eq!(cache.latest_epoch(), Some(e(3)));
    assert!(cache.admits(e(3)) && cache.admits(e(7)) && cache.admits(LeaderEpoch::NONE));
    assert!(!cache.admits(e(2)));
}

#[test]
fn truncate_from_end_drops_entries_at_or_past_the_new_end() {
    let mut cache = EpochCache::from_entries(&[(0, 0), (2, 10), (5, 20)]);
    assert!(!cache.truncate_from_end(o(21)));
    assert!(cache.truncate_from_end(o(20)));
    assert_eq!(cache, EpochCache::from_entries(&[(0, 0), (2, 10)]));
    assert!(cache.truncate_from_end(o(3)));
    assert_eq!(cache, EpochCache::from_entries(&[(0, 0)]));
    assert!(cache.truncate_from_end(o(0)));
    assert!(cache.entries().is_empty());
}

#[test]
fn truncate_from_start_collapses_entries_below_the_log_start() {
    let mut cache = EpochCache::from_entries(&[(0, 0), (2, 10), (5, 20)]);
    assert!(!cache.truncate_from_start(o(0)));
    assert!(cache.truncate_from_start(o(15)));
    assert_eq!(cache, EpochCache::from_entries(&[(2, 15), (5, 20)]));
    // An entry exactly at the new start survives unchanged.
    assert!(cache.truncate_from_start(o(20)));
    assert_eq!(cache, EpochCache::from_entries(&[(5, 20)]));
    assert!(cache.truncate_from_start(o(40)));
    assert_eq!(cache, EpochCache::from_entries(&[(5, 40)]));
}

#[test]
fn end_offset_for_epoch_follows_kafka() {
    let cache = EpochCache::from_entries(&[(1, 0), (3, 10), (4, 25)]);
    let end = o(40);
    let none = LeaderEpoch::NONE;
    // The latest epoch ends at the log end.
    assert_eq!(
        cache.end_offset_for_epoch(e(4), end, none),
        Some((e(4), end))
    );
    // A known older epoch ends where the next one starts.
    assert_eq!(
        cache.end_offset_for_epoch(e(3), end, none),
        Some((e(3), o(25)))
    );
    assert_eq!(
        cache.end_offset_for_epoch(e(1), end, none),
        Some((e(1), o(10)))
    );
    // An epoch the leader never had: the largest below it, ending where the
    // next larger one starts.
    assert_eq!(
        cache.end_offset_for_epoch(e(2), end, none),
        Some((e(1), o(10)))
    );
    // Older than everything: the requested epoch ends at the first start.
    assert_eq!(
        cache.end_offset_for_epoch(e(0), end, none),
        Some((e(0), o(0)))
    );
    // Newer than everything, negative, or no epochs at all: undefined.
    assert_eq!(cache.end_offset_for_epoch(e(5), end, none), None);
    assert_eq!(cache.end_offset_for_epoch(none, end, none), None);
    assert_eq!(
        EpochCache::default().end_offset_for_epoch(e(0), end, none),
        None
    );
}

#[test]
fn a_new_leader_that_has_not_written_yet_counts_its_epoch_from_the_log_end() {
    let cache = EpochCache::from_entries(&[(1, 0), (3, 10)]);
    let end = o(30);
    // Leader at epoch 6, nothing written under 6 yet.
    assert_eq!(
        cache.end_offset_for_epoch(e(6), end, e(6)),
        Some((e(6), end))
    );
    assert_eq!(
        cache.end_offset_for_epoch(e(5), end, e(6)),
        Some((e(3), end))
    );
    assert_eq!(
        cache.end_offset_for_epoch(e(3), end, e(6)),
        Some((e(3), end))
    );
    assert_eq!(
        cache.end_offset_for_epoch(e(2), end, e(6)),
        Some((e(1), o(10)))
    );
    assert_eq!(cache.end_offset_for_epoch(e(7), end, e(6)), None);
    assert_eq!(
        EpochCache::default().end_offset_for_epoch(e(2), end, e(6)),
        Some((e(2), end))
    );
}

#[test]
fn checkpoint_bytes_round_trip_and_damage_is_detected() {
    let cache = EpochCache::from_entries(&[(0, 0), (2, 10), (7, 1 << 40)]);
    let bytes = cache.encode();
    assert_eq!(bytes.len(), HEADER_BYTES + 3 * ENTRY_BYTES + CRC_BYTES);
    assert_eq!(EpochCache::decode(&bytes), Ok(cache.clone()));
    assert_eq!(
        EpochCache::decode(&EpochCache::default().encode()),
        Ok(EpochCache::default())
    );
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x40;
        assert!(EpochCache::decode(&damaged).is_err(), "flip at byte {i}");
    }
    for len in 0..bytes.len() {
        assert!(EpochCache::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    let mut huge = bytes[..HEADER_BYTES].to_vec();
    huge[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; CRC_BYTES]);
    assert!(matches!(
        EpochCache::decode(&huge),
        Err(EpochFileError::TooManyEntries { .. })
    ));
}

#[test]
fn unordered_entries_are_rejected_even_with_a_valid_crc() {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&2u32.to_be_bytes());
    for (epoch, start) in [(3i32, 10u64), (2, 20)] {
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&start.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(
        EpochCache::decode(&out),
        Err(EpochFileError::NotMonotonic { index: 1 })
    );
}

#[test]
fn follower_truncation_covers_every_kind_of_answer() {
    let (end, hw) = (o(50), o(20));
    // No answer: fall back to the high watermark.
    assert_eq!(
        follower_truncation_offset(None, None, end, hw),
        Truncation::Complete(hw)
    );
    // Same epoch on both sides: keep below both ends.
    assert_eq!(
        follower_truncation_offset(Some((e(3), o(40))), Some((e(3), end)), end, hw),
        Truncation::Complete(o(40))
    );
    // The leader has more of that epoch than the follower: keep everything.
    assert_eq!(
        follower_truncation_offset(Some((e(3), o(90))), Some((e(3), end)), end, hw),
        Truncation::Complete(end)
    );
    // The leader answered a smaller epoch the follower also has, ending
    // earlier on the follower (a quick second failover).
    assert_eq!(
        follower_truncation_offset(Some((e(2), o(35))), Some((e(2), o(30))), end, hw),
        Truncation::Complete(o(30))
    );
    // The leader answered an epoch the follower never had: cut to where the
    // follower's older epoch ends and ask again about that one.
    assert_eq!(
        follower_truncation_offset(Some((e(2), o(35))), Some((e(1), o(25))), end, hw),
        Truncation::AskAgain {
            offset: o(25),
            epoch: e(1)
        }
    );
    // The follower has no epoch at or below the leader's answer.
    assert_eq!(
        follower_truncation_offset(Some((e(1), o(12))), None, end, hw),
        Truncation::Complete(o(12))
    );
    // Never beyond the follower's own log end.
    assert_eq!(
        follower_truncation_offset(Some((e(1), o(70))), None, end, hw),
        Truncation::Complete(end)
    );
}
