//! `sluice stream create|list|describe|delete`, over the TCP protocol.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use sluice::client::{Limit, PartitionMetadata, StreamConfig, StreamMetadata};
use sluice::model::NodeId;
use sluice::protocol::envelope::AckPolicy;
use sluice::protocol::error_code::ErrorCode;

use super::hints::{connect, explain, Subject, Target};
use super::parse::{format_bytes, format_duration_ms};
use super::rfc3339::format_rfc3339_ms;
use super::table::{optional, row, table};
use super::{CreateArgs, StreamCommand};

pub fn run(server: &Target, command: StreamCommand) -> anyhow::Result<ExitCode> {
    match command {
        StreamCommand::Create(args) => create(server, args),
        StreamCommand::List => list(server),
        StreamCommand::Describe { name } => describe(server, &name),
        StreamCommand::Delete { name } => delete(server, &name),
    }
}

fn create(server: &Target, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let config = StreamConfig {
        name: args.name,
        subject: args.subject,
        group: args.group,
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        min_insync_replicas: args.min_insync_replicas,
        retention_age_ms: args.retention_age.unwrap_or_default(),
        retention_bytes: args.retention_bytes.unwrap_or_default(),
        retention_messages: args.retention_messages.unwrap_or_default(),
        compact: args.compact,
        ack_policy: None,
    };
    let mut client = connect(server)?;
    let created = client
        .create_stream(&config)
        .map_err(|error| explain(error, Subject::stream(&config.name)))?;
    if created.created {
        println!("created stream {}", config.name);
    } else {
        println!("stream {} already exists with these settings", config.name);
    }
    print!("{}", describe_text(&created.stream));
    Ok(ExitCode::SUCCESS)
}

fn list(server: &Target) -> anyhow::Result<ExitCode> {
    let mut client = connect(server)?;
    let metadata = client
        .metadata()
        .map_err(|error| explain(error, Subject::default()))?;
    if metadata.streams.is_empty() {
        eprintln!("no streams yet: create one with `sluice stream create NAME --subject SUBJECT`");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", list_text(&metadata.streams));
    Ok(ExitCode::SUCCESS)
}

fn describe(server: &Target, name: &str) -> anyhow::Result<ExitCode> {
    let mut client = connect(server)?;
    let metadata = client
        .metadata_for(&[name])
        .map_err(|error| explain(error, Subject::stream(name)))?;
    let Some(stream) = metadata.stream(name) else {
        bail!("the server did not describe stream {name}");
    };
    if let Some(code) = stream.error {
        return Err(explain(
            sluice::client::ClientError::Server {
                code,
                message: format!("stream {name}: {code}"),
                right_port: None,
            },
            Subject::stream(name),
        ));
    }
    print!("{}", describe_text(stream));
    // Replication progress: leaders, ISR and lag as the partition leaders
    // report them (numbers a node did not report in time show as `-`).
    match client.cluster_status(&[name]) {
        Ok(status) if !status.partitions.is_empty() => {
            println!("\nreplication");
            print!(
                "{}",
                super::cluster::partitions_text(&status.partitions, false)
            );
        }
        Ok(_) => {}
        Err(error) => eprintln!("(replication status unavailable: {error})"),
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(server: &Target, name: &str) -> anyhow::Result<ExitCode> {
    let mut client = connect(server)?;
    client
        .delete_stream(name)
        .map_err(|error| explain(error, Subject::stream(name)))?;
    println!("deleted stream {name}");
    Ok(ExitCode::SUCCESS)
}

/// One row per stream.
fn list_text(streams: &[StreamMetadata]) -> String {
    let mut rows = vec![row([
        "NAME",
        "SUBJECT",
        "GROUP",
        "PARTITIONS",
        "REPLICATION",
    ])];
    for stream in streams {
        let config = &stream.config;
        let status = stream.error.map(ErrorCode::name);
        rows.push(vec![
            config.name.clone(),
            status.map_or_else(|| config.subject.clone(), |s| format!("({s})")),
            config.group.clone().unwrap_or_else(|| "-".into()),
            partition_count(stream),
            optional(config.replication_factor),
        ]);
    }
    table(&rows)
}

/// A stream's settings, then one row per partition.
fn describe_text(stream: &StreamMetadata) -> String {
    let config = &stream.config;
    let settings = [
        ("stream", config.name.clone()),
        ("subject", config.subject.clone()),
        ("group", config.group.clone().unwrap_or_else(|| "-".into())),
        ("partitions", partition_count(stream)),
        ("replication", optional(config.replication_factor)),
        ("min in-sync", optional(config.min_insync_replicas)),
        (
            "retention age",
            limit(config.retention_age_ms, format_duration_ms),
        ),
        (
            "retention bytes",
            limit(config.retention_bytes, format_bytes),
        ),
        (
            "retention messages",
            limit(config.retention_messages, |n| n.to_string()),
        ),
        ("compact", if config.compact { "yes" } else { "no" }.into()),
        ("ack policy", ack_policy(config.ack_policy)),
    ];
    let mut text = String::new();
    for (name, value) in settings {
        let _ = writeln!(text, "{name:<19} {value}");
    }
    if stream.partitions.is_empty() {
        return text;
    }
    text.push('\n');
    let mut rows = vec![row([
        "PARTITION",
        "LEADER",
        "SHARD",
        "PORT",
        "HIGH WATERMARK",
        "LOG START",
        "REPLICAS",
        "ISR",
        "STATE",
    ])];
    for partition in &stream.partitions {
        rows.push(vec![
            partition.partition.to_string(),
            optional(partition.leader),
            partition.shard_index.to_string(),
            partition.consumer_port.to_string(),
            optional(partition.high_watermark.map(|o| o.0)),
            optional(partition.log_start_offset.map(|o| o.0)),
            ids(&partition.replicas),
            ids(&partition.isr),
            partition_state(partition),
        ]);
    }
    text.push_str(&table(&rows));
    text
}

/// `ok`, `failed: <cause> at <time>` after a fail-stop, `failed: not open:
/// <cause>` while the answering node cannot open its copy (retried every
/// second), or `-` when no shard of the answering node holds it.
fn partition_state(partition: &PartitionMetadata) -> String {
    match &partition.failure {
        Some(failure) => match failure.at_ms {
            Some(at) => format!("failed: {} at {}", failure.cause, format_rfc3339_ms(at)),
            None => format!("failed: {}", failure.cause),
        },
        None if partition.high_watermark.is_some() => "ok".into(),
        None => "-".into(),
    }
}

fn partition_count(stream: &StreamMetadata) -> String {
    match stream.config.partitions {
        Some(count) => count.to_string(),
        None if !stream.partitions.is_empty() => stream.partitions.len().to_string(),
        None => "-".into(),
    }
}

fn limit(limit: Limit, format: impl Fn(u64) -> String) -> String {
    match limit {
        Limit::ServerDefault => "server default".into(),
        Limit::Unlimited => "unlimited".into(),
        Limit::Max(value) => format(value),
    }
}

fn ack_policy(policy: Option<AckPolicy>) -> String {
    match policy {
        None => "server default",
        Some(AckPolicy::None) => "none",
        Some(AckPolicy::Leader) => "leader",
        Some(AckPolicy::All) => "all",
    }
    .into()
}

fn ids(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::types::Offset;
    use sluice::client::PartitionFailure;

    fn nid(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn stream() -> StreamMetadata {
        StreamMetadata {
            error: None,
            config: StreamConfig {
                partitions: Some(2),
                replication_factor: Some(1),
                retention_age_ms: Limit::Max(7 * 86_400_000),
                retention_bytes: Limit::Max(10 << 30),
                ..StreamConfig::new("orders", "orders.>")
            },
            partitions: vec![
                PartitionMetadata {
                    partition: 0,
                    leader: Some(nid(1)),
                    consumer_port: 9293,
                    shard_index: 1,
                    replicas: vec![nid(1)],
                    isr: vec![nid(1)],
                    high_watermark: Some(Offset(12)),
                    log_start_offset: Some(Offset(0)),
                    ..PartitionMetadata::default()
                },
                PartitionMetadata {
                    partition: 1,
                    consumer_port: 9292,
                    ..PartitionMetadata::default()
                },
                PartitionMetadata {
                    partition: 2,
                    leader: Some(nid(1)),
                    consumer_port: 9292,
                    replicas: vec![nid(1)],
                    isr: vec![nid(1)],
                    high_watermark: Some(Offset(7)),
                    log_start_offset: Some(Offset(0)),
                    failure: Some(PartitionFailure {
                        cause: "fdatasync EIO".into(),
                        at_ms: Some(1_700_000_000_123),
                    }),
                    ..PartitionMetadata::default()
                },
            ],
        }
    }

    #[test]
    fn list_is_a_table() {
        let text = list_text(&[stream()]);
        assert_eq!(
            text,
            "NAME    SUBJECT   GROUP  PARTITIONS  REPLICATION\n\
             orders  orders.>  -      2           1\n"
        );
    }

    #[test]
    fn describe_shows_settings_and_partitions() {
        let text = describe_text(&stream());
        assert!(text.contains("retention age       7d\n"), "{text}");
        assert!(text.contains("retention bytes     10GiB\n"), "{text}");
        assert!(
            text.contains("retention messages  server default\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "PARTITION  LEADER  SHARD  PORT  HIGH WATERMARK  LOG START  REPLICAS  ISR  STATE\n\
             0          1       1      9293  12              0          1         1    ok\n\
             1          -       0      9292  -               -          -         -    -\n\
             2          1       0      9292  7               0          1         1    \
             failed: fdatasync EIO at 2023-11-14T22:13:20.123Z\n"
            ),
            "{text}"
        );
    }
}
