//! `sluice cluster status`, over the TCP protocol (kind 0x0B).

use std::fmt::Write as _;
use std::process::ExitCode;

use sluice::client::{ClusterStatus, PartitionState};
use sluice::model::NodeId;

use super::hints::{connect, explain, Subject, Target};
use super::table::{optional, row, table};
use super::ClusterCommand;

pub fn run(server: &Target, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Status { json } => status(server, json),
    }
}

fn status(server: &Target, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(server)?;
    let status = client
        .cluster_status(&[])
        .map_err(|error| explain(error, Subject::default()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn status_text(status: &ClusterStatus) -> String {
    let mut text = String::new();
    if !status.liveness_known {
        let _ = writeln!(
            text,
            "liveness unknown: no metadata leader answered (is a majority of the nodes up?)\n"
        );
    }
    let mut rows = vec![row([
        "NODE", "RAFT", "CLIENT", "SHARDS", "ALIVE", "METADATA",
    ])];
    for node in &status.nodes {
        rows.push(vec![
            node.node_id.to_string(),
            node.raft_addr.clone(),
            node.client_addr.clone(),
            node.shard_count.to_string(),
            yes_no(node.alive),
            if node.metadata_leader { "leader" } else { "-" }.into(),
        ]);
    }
    text.push_str(&table(&rows));
    if !status.partitions.is_empty() {
        text.push('\n');
        text.push_str(&partitions_text(&status.partitions, true));
    }
    text
}

/// One row per partition: leader, epoch, replicas, ISR, high watermark and
/// lag per replica (`node:lag`, `*` marking in-sync replicas).
pub fn partitions_text(partitions: &[PartitionState], with_stream: bool) -> String {
    let mut header = vec![
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "HIGH WATERMARK",
        "LOG END",
        "LAG",
    ];
    if with_stream {
        header.insert(0, "STREAM");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for p in partitions {
        let lag = p
            .replica_status
            .iter()
            .map(|r| {
                let mark = if r.in_sync { "*" } else { "" };
                format!("{}{mark}:{}", r.node_id, optional(r.lag))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut row = vec![
            p.partition.to_string(),
            optional(p.leader),
            optional(p.leader_epoch),
            ids(&p.replicas),
            ids(&p.isr),
            optional(p.high_watermark),
            optional(p.log_end_offset),
            lag,
        ];
        if with_stream {
            row.insert(0, p.stream.clone());
        }
        rows.push(row);
    }
    table(&rows)
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

fn ids(ids: &[NodeId]) -> String {
    let joined: Vec<String> = ids.iter().map(NodeId::to_string).collect();
    joined.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::client::{NodeState, ReplicaState};

    fn nid(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    #[test]
    fn status_text_shows_nodes_and_partitions_with_lag() {
        let status = ClusterStatus {
            metadata_leader: Some(nid(1)),
            liveness_known: true,
            nodes: vec![NodeState {
                node_id: nid(1),
                raft_addr: "127.0.0.1:9281".into(),
                client_addr: "127.0.0.1:9292".into(),
                shard_count: 2,
                alive: true,
                metadata_leader: true,
            }],
            partitions: vec![PartitionState {
                stream: "orders".into(),
                partition: 0,
                leader: Some(nid(1)),
                leader_epoch: Some(3),
                replicas: vec![nid(1), nid(2)],
                isr: vec![nid(1)],
                high_watermark: Some(10),
                log_start_offset: Some(0),
                log_end_offset: Some(12),
                replica_status: vec![
                    ReplicaState {
                        node_id: nid(1),
                        log_end_offset: Some(12),
                        lag: Some(0),
                        in_sync: true,
                    },
                    ReplicaState {
                        node_id: nid(2),
                        log_end_offset: None,
                        lag: None,
                        in_sync: false,
                    },
                ],
            }],
        };
        let text = status_text(&status);
        assert!(text.contains("NODE  RAFT"), "{text}");
        assert!(text.contains("leader"), "{text}");
        assert!(
            text.contains("orders  0          1       3      1,2       1"),
            "{text}"
        );
        assert!(text.contains("1*:0 2:-"), "{text}");
    }
}
