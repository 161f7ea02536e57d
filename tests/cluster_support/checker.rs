//! The consistency checker: compares what publishers were told (the acks)
//! with what every replica holds for one partition.
//!
//! Faults, all of which must be 0 after every scenario:
//! - **lost**: an acked payload missing from some replica;
//! - **duplicate**: one payload stored at two offsets of the same replica
//!   (payloads are unique per publish attempt and never retried, so any
//!   second copy is the system's doing);
//! - **inconsistent offset**: an offset holding two different payloads
//!   (across replicas, or a replica vs the ack), or an acked payload stored at
//!   another offset than the ack named;
//! - **non-monotonic**: a replica's offsets not strictly increasing.
//!
//! Attempts that were never acked (timeouts, refusals) may or may not be
//! stored; they are counted for information only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

/// How many examples of each fault the report names.
const EXAMPLES_PER_FAULT: usize = 5;

/// What the publisher learned about one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed at `offset` (the ack said so).
    Acked { offset: u64 },
    /// An explicit error ack other than `Timeout` (e.g. NotEnoughReplicas):
    /// the server says it is not committed.
    Refused { code: String },
    /// No answer, a `Timeout` ack, or no responders: outcome unknown.
    Unknown { reason: String },
}

/// One publish attempt. Times are since the publisher started.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub payload: Vec<u8>,
    pub sent: Duration,
    pub answered: Duration,
    pub outcome: Outcome,
    /// The node that answered (acks say so), when known.
    pub answered_by: Option<u64>,
    /// The leader epoch an ack says the record was committed in.
    pub leader_epoch: Option<u32>,
}

/// Every attempt of a run, in sending order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub attempts: Vec<Attempt>,
}

impl History {
    pub fn acked(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
            .count()
    }

    pub fn merge(&mut self, other: History) {
        self.attempts.extend(other.attempts);
    }
}

/// One replica's records of the partition, in the order it returned them.
/// A view that is not `complete` (a consumer that read along during the
/// faults) is not expected to hold every ack, but whatever it saw must agree
/// with everything else.
#[derive(Clone, Debug)]
pub struct ReplicaView {
    pub name: String,
    pub records: Vec<(u64, Vec<u8>)>,
    pub complete: bool,
}

/// Per-replica counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaReport {
    pub name: String,
    pub records: usize,
    pub lost: usize,
    pub duplicate: usize,
    pub non_monotonic: usize,
    /// Offsets skipped between consecutive records (information).
    pub gaps: usize,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub attempts: usize,
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    /// Unacked attempts found on some replica (legal: outcome unknown).
    pub unacked_stored: usize,
    /// Explicitly refused attempts found on some replica (information: the
    /// error said "not committed").
    pub refused_stored: usize,
    /// Distinct acked payloads missing from at least one replica.
    pub lost: usize,
    /// Extra copies of a payload within one replica, summed over replicas.
    pub duplicate: usize,
    /// Offsets with conflicting contents.
    pub inconsistent_offset: usize,
    /// Out-of-order offsets, summed over replicas.
    pub non_monotonic: usize,
    pub replicas: Vec<ReplicaReport>,
    /// Why attempts were not acked: reason (up to its first ':') → count.
    pub not_acked_reasons: BTreeMap<String, usize>,
    pub examples: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicate == 0
            && self.inconsistent_offset == 0
            && self.non_monotonic == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checker: attempts={} acked={} refused={} unknown={} unacked_stored={} refused_stored={}",
            self.attempts, self.acked, self.refused, self.unknown, self.unacked_stored, self.refused_stored
        )?;
        writeln!(
            f,
            "checker: lost={} duplicate={} inconsistent_offset={} non_monotonic={} => {}",
            self.lost,
            self.duplicate,
            self.inconsistent_offset,
            self.non_monotonic,
            if self.is_clean() { "CLEAN" } else { "FAULTS" }
        )?;
        if !self.not_acked_reasons.is_empty() {
            let reasons: Vec<String> = self
                .not_acked_reasons
                .iter()
                .map(|(reason, n)| format!("{reason} ×{n}"))
                .collect();
            writeln!(f, "checker: not acked: {}", reasons.join(", "))?;
        }
        for r in &self.replicas {
            writeln!(
                f,
                "checker:   replica {}: records={} lost={} duplicate={} non_monotonic={} gaps={}",
                r.name, r.records, r.lost, r.duplicate, r.non_monotonic, r.gaps
            )?;
        }
        for example in &self.examples {
            writeln!(f, "checker:   {example}")?;
        }
        Ok(())
    }
}

fn short(reason: &str) -> String {
    reason
        .split(':')
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

fn show(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

struct Examples {
    by_kind: HashMap<&'static str, usize>,
    lines: Vec<String>,
}

impl Examples {
    fn note(&mut self, kind: &'static str, line: impl FnOnce() -> String) {
        let seen = self.by_kind.entry(kind).or_insert(0);
        *seen += 1;
        if *seen <= EXAMPLES_PER_FAULT {
            self.lines.push(format!("{kind}: {}", line()));
        }
    }
}

/// Checks `history` against the replicas' contents of one partition.
pub fn check(history: &History, replicas: &[ReplicaView]) -> Report {
    let mut examples = Examples {
        by_kind: HashMap::new(),
        lines: Vec::new(),
    };
    let mut report = Report {
        attempts: history.attempts.len(),
        ..Report::default()
    };
    // Acked payload → offset; acked offset → payloads (two acks at one
    // offset is itself an inconsistency).
    let mut acked: HashMap<&[u8], u64> = HashMap::new();
    let mut acked_at: BTreeMap<u64, BTreeSet<&[u8]>> = BTreeMap::new();
    let mut refused: BTreeSet<&[u8]> = BTreeSet::new();
    let mut unknown: BTreeSet<&[u8]> = BTreeSet::new();
    for attempt in &history.attempts {
        match &attempt.outcome {
            Outcome::Acked { offset } => {
                report.acked += 1;
                acked.insert(&attempt.payload, *offset);
                acked_at
                    .entry(*offset)
                    .or_default()
                    .insert(&attempt.payload);
            }
            Outcome::Refused { code } => {
                *report.not_acked_reasons.entry(short(code)).or_insert(0) += 1;
                report.refused += 1;
                refused.insert(&attempt.payload);
            }
            Outcome::Unknown { reason } => {
                *report.not_acked_reasons.entry(short(reason)).or_insert(0) += 1;
                report.unknown += 1;
                unknown.insert(&attempt.payload);
            }
        }
    }

    // Offset → every value seen there (replicas and acks).
    let mut values_at: BTreeMap<u64, BTreeSet<&[u8]>> = acked_at.clone();
    let mut bad_offsets: BTreeSet<u64> = BTreeSet::new();
    let mut lost_payloads: BTreeSet<&[u8]> = BTreeSet::new();
    let mut stored_anywhere: BTreeSet<&[u8]> = BTreeSet::new();

    for replica in replicas {
        let mut r = ReplicaReport {
            name: replica.name.clone(),
            records: replica.records.len(),
            ..ReplicaReport::default()
        };
        let mut offsets_of: HashMap<&[u8], Vec<u64>> = HashMap::new();
        let mut previous: Option<u64> = None;
        for (offset, payload) in &replica.records {
            if let Some(prev) = previous {
                if *offset <= prev {
                    r.non_monotonic += 1;
                    examples.note("non-monotonic", || {
                        format!("{}: offset {offset} after {prev}", replica.name)
                    });
                } else if *offset > prev + 1 {
                    r.gaps += 1;
                }
            }
            previous = Some(*offset);
            offsets_of.entry(payload).or_default().push(*offset);
            values_at.entry(*offset).or_default().insert(payload);
            stored_anywhere.insert(payload);
        }
        for (payload, offsets) in &offsets_of {
            if offsets.len() > 1 {
                r.duplicate += offsets.len() - 1;
                examples.note("duplicate", || {
                    format!(
                        "{}: {:?} at offsets {offsets:?}",
                        replica.name,
                        show(payload)
                    )
                });
            }
            if let Some(&ack_offset) = acked.get(payload) {
                if offsets.iter().any(|&o| o != ack_offset) {
                    bad_offsets.insert(ack_offset);
                    examples.note("inconsistent-offset", || {
                        format!(
                            "{}: {:?} acked at {ack_offset}, stored at {offsets:?}",
                            replica.name,
                            show(payload)
                        )
                    });
                }
            }
        }
        for (payload, &ack_offset) in &acked {
            if replica.complete && !offsets_of.contains_key(payload) {
                r.lost += 1;
                lost_payloads.insert(payload);
                examples.note("lost", || {
                    format!(
                        "{}: {:?} acked at {ack_offset}",
                        replica.name,
                        show(payload)
                    )
                });
            }
        }
        report.duplicate += r.duplicate;
        report.non_monotonic += r.non_monotonic;
        report.replicas.push(r);
    }

    for (offset, values) in &values_at {
        if values.len() > 1 {
            bad_offsets.insert(*offset);
            examples.note("inconsistent-offset", || {
                let shown: Vec<String> = values.iter().map(|v| show(v)).collect();
                format!("offset {offset} holds {shown:?}")
            });
        }
    }
    report.lost = lost_payloads.len();
    report.inconsistent_offset = bad_offsets.len();
    report.unacked_stored = unknown
        .iter()
        .filter(|p| stored_anywhere.contains(*p))
        .count();
    report.refused_stored = refused
        .iter()
        .filter(|p| stored_anywhere.contains(*p))
        .count();
    report.examples = examples.lines;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(payload: &str, outcome: Outcome) -> Attempt {
        Attempt {
            payload: payload.as_bytes().to_vec(),
            sent: Duration::ZERO,
            answered: Duration::ZERO,
            outcome,
            answered_by: None,
            leader_epoch: None,
        }
    }

    fn acked(payload: &str, offset: u64) -> Attempt {
        attempt(payload, Outcome::Acked { offset })
    }

    fn unknown(payload: &str) -> Attempt {
        attempt(
            payload,
            Outcome::Unknown {
                reason: "timeout".into(),
            },
        )
    }

    fn replica(name: &str, records: &[(u64, &str)]) -> ReplicaView {
        ReplicaView {
            name: name.into(),
            records: records
                .iter()
                .map(|(o, p)| (*o, p.as_bytes().to_vec()))
                .collect(),
            complete: true,
        }
    }

    fn history(attempts: Vec<Attempt>) -> History {
        History { attempts }
    }

    fn faults(report: &Report) -> [usize; 4] {
        [
            report.lost,
            report.duplicate,
            report.inconsistent_offset,
            report.non_monotonic,
        ]
    }

    #[test]
    fn identical_replicas_holding_every_ack_are_clean() {
        let h = history(vec![
            acked("a", 0),
            acked("b", 1),
            unknown("c"),
            acked("d", 3),
        ]);
        let log = [(0, "a"), (1, "b"), (2, "c"), (3, "d")];
        let report = check(&h, &[replica("n1", &log), replica("n2", &log)]);
        assert!(report.is_clean(), "{report}");
        assert_eq!(faults(&report), [0, 0, 0, 0]);
        assert_eq!(
            (report.acked, report.unknown, report.unacked_stored),
            (3, 1, 1)
        );
        assert!(report.to_string().contains("CLEAN"));
    }

    #[test]
    fn unacked_attempts_may_be_missing() {
        let h = history(vec![acked("a", 0), unknown("x"), acked("b", 1)]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (1, "b")])]);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.unacked_stored, 0);
    }

    #[test]
    fn an_acked_payload_missing_from_one_replica_is_lost() {
        let h = history(vec![acked("a", 0), acked("b", 1)]);
        let report = check(
            &h,
            &[
                replica("n1", &[(0, "a"), (1, "b")]),
                replica("n2", &[(0, "a")]),
                replica("n3", &[(0, "a")]),
            ],
        );
        // One payload, missing on two replicas: lost once, per replica twice.
        assert_eq!(faults(&report), [1, 0, 0, 0], "{report}");
        assert_eq!(report.replicas.iter().map(|r| r.lost).sum::<usize>(), 2);
        assert!(!report.is_clean());
        assert!(report.to_string().contains("FAULTS"));
    }

    #[test]
    fn the_same_payload_at_two_offsets_is_a_duplicate() {
        let h = history(vec![acked("a", 0), unknown("b")]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (1, "b"), (2, "b")])]);
        assert_eq!(faults(&report), [0, 1, 0, 0], "{report}");
    }

    #[test]
    fn two_values_at_one_offset_across_replicas_are_inconsistent() {
        // Unacked data forked: the same offset holds different payloads.
        let h = history(vec![acked("a", 0), unknown("x"), unknown("y")]);
        let report = check(
            &h,
            &[
                replica("n1", &[(0, "a"), (1, "x")]),
                replica("n2", &[(0, "a"), (1, "y")]),
            ],
        );
        assert_eq!(faults(&report), [0, 0, 1, 0], "{report}");
    }

    #[test]
    fn a_replica_disagreeing_with_the_ack_is_inconsistent() {
        // The ack named offset 1 for "b", but the log has "b" at 2 and an
        // unacked payload at 1 (a stale leader's write survived).
        let h = history(vec![acked("a", 0), acked("b", 1), unknown("z")]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (1, "z"), (2, "b")])]);
        assert_eq!(faults(&report), [0, 0, 1, 0], "{report}");
    }

    #[test]
    fn an_acked_payload_at_another_offset_on_a_shorter_replica_is_inconsistent() {
        let h = history(vec![acked("a", 0), acked("b", 5)]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (1, "b")])]);
        assert_eq!(faults(&report), [0, 0, 1, 0], "{report}");
    }

    #[test]
    fn two_acks_for_one_offset_are_inconsistent() {
        // Split brain: two leaders acked different payloads at offset 1.
        let h = history(vec![acked("a", 0), acked("b", 1), acked("c", 1)]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (1, "b")])]);
        assert_eq!(report.inconsistent_offset, 1, "{report}");
        assert_eq!(report.lost, 1, "{report}");
    }

    #[test]
    fn offsets_going_backwards_are_non_monotonic() {
        let h = history(vec![acked("a", 0), acked("b", 1), acked("c", 2)]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (2, "c"), (1, "b")])]);
        assert_eq!(faults(&report), [0, 0, 0, 1], "{report}");
        // A repeated offset is non-monotonic too (and two values there).
        let report = check(
            &h,
            &[replica("n1", &[(0, "a"), (1, "b"), (1, "x"), (2, "c")])],
        );
        assert_eq!(report.non_monotonic, 1, "{report}");
        assert_eq!(report.inconsistent_offset, 1, "{report}");
    }

    #[test]
    fn refused_but_stored_is_reported_not_a_fault() {
        let h = history(vec![
            acked("a", 0),
            attempt(
                "r",
                Outcome::Refused {
                    code: "NotEnoughReplicas".into(),
                },
            ),
        ]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (1, "r")])]);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.refused_stored, 1);
    }

    #[test]
    fn a_partial_view_loses_nothing_but_must_agree() {
        let h = history(vec![acked("a", 0), acked("b", 1), unknown("x")]);
        let full = replica("n1", &[(0, "a"), (1, "b")]);
        let mut partial = replica("live consumer", &[(0, "a")]);
        partial.complete = false;
        let report = check(&h, &[full.clone(), partial]);
        assert!(report.is_clean(), "{report}");
        // A consumer that saw an uncommitted write later truncated away.
        let mut saw_uncommitted = replica("live consumer", &[(0, "a"), (1, "x")]);
        saw_uncommitted.complete = false;
        let report = check(&h, &[full, saw_uncommitted]);
        assert_eq!(faults(&report), [0, 0, 1, 0], "{report}");
    }

    #[test]
    fn gaps_are_counted_for_information() {
        let h = history(vec![acked("a", 0), acked("b", 3)]);
        let report = check(&h, &[replica("n1", &[(0, "a"), (3, "b")])]);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.replicas[0].gaps, 1);
    }

    #[test]
    fn every_fault_kind_at_once_is_counted_separately() {
        let h = history(vec![
            acked("a", 0),
            acked("b", 1),
            acked("c", 2),
            acked("d", 3),
        ]);
        let report = check(
            &h,
            &[
                // lost "d"; duplicate "a"; offset 1 disagrees with n2.
                replica("n1", &[(0, "a"), (1, "b"), (2, "c"), (4, "a")]),
                // non-monotonic: 3 before 2.
                replica("n2", &[(0, "a"), (1, "q"), (3, "d"), (2, "c")]),
            ],
        );
        assert_eq!(report.lost, 2, "{report}"); // "d" on n1, "b" on n2
        assert_eq!(report.duplicate, 1, "{report}");
        // Offset 1 ("b" vs "q"), offset 4 holds "a" (acked at 0) → offset 0.
        assert_eq!(report.inconsistent_offset, 2, "{report}");
        assert_eq!(report.non_monotonic, 1, "{report}");
        assert!(report.examples.iter().any(|e| e.starts_with("lost")));
    }
}
