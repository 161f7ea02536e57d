//! The `sluice` command line: argument definitions (clap derive), and one
//! module per command. `main.rs` parses and calls [`run`].
//!
//! Users' scripts depend on the command, flag and output names here: add,
//! never rename.

mod acl;
mod cluster;
mod consume;
mod hints;
mod parse;
mod publish;
mod rfc3339;
mod serve;
mod stream;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice::client::Limit;

use self::parse::StartAt;

/// Default `--server`, the default `--listen` of `sluice serve`.
pub const SERVER_DEFAULT: &str = sluice::config::LISTEN_DEFAULT;
/// Default `--nats-url` of `sluice publish`.
pub const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";

const ABOUT: &str = "Sluice: durable streams for NATS";

const LONG_ABOUT: &str = "\
Sluice: durable streams for NATS.

Sluice binds streams to NATS subjects. Every message published on a bound
subject is sequenced into a partition log, fsynced, and acked to the
publisher on its reply subject. Consumers read the log back over Sluice's TCP
protocol, from any offset or time, as often as they like.

`sluice serve` runs a node; the other commands talk to one: `stream` and
`consume` over TCP (--server), `publish` through NATS (--nats-url).";

const EXAMPLES: &str = "\
Example session:
  $ nats-server -a 127.0.0.1 -p 4222 &
  $ sluice serve --data-dir /tmp/sluice --nats-url nats://127.0.0.1:4222 &
  $ sluice stream create orders --subject orders --partitions 2 --retention-age 7d
  $ sluice publish orders '{\"id\":1}'
  stream=orders partition=0 offset=0
  $ seq 3 | sluice publish orders --key user-42
  $ sluice consume orders --format json
  {\"offset\":0,\"timestamp\":1714564800000,\"subject\":\"orders\",\"key\":null,\"value\":\"{\\\"id\\\":1}\",\"headers\":{}}
  ...
  $ sluice consume orders --from latest --follow      # tail new records; Ctrl-C stops
  $ sluice stream describe orders

Run `sluice <command> --help` for each command's flags and examples.";

/// The `sluice` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    // Node and credentials of the commands that talk to one over TCP.
    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// `--server` and the credentials. Global: users give them before or after
/// the subcommand.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Sluice node to talk to: any of its shard ports (the client finds the
    /// port owning each partition). Used by `stream` and `consume`; `serve`
    /// listens on --listen instead.
    ///
    /// Example: --server 10.0.0.5:9292
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = SERVER_DEFAULT,
        value_name = "HOST:PORT",
        display_order = 900
    )]
    pub server: String,

    /// Token to authenticate with, when the server requires authentication
    /// (`[auth]` in its sluice.toml). Used by `stream`, `consume` and `acl`.
    ///
    /// Example: --token 3f9c2e7a5b1d4c8e9a6f0b2d7c4e1a8f
    #[arg(
        long,
        global = true,
        env = "SLUICE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "user",
        display_order = 901
    )]
    pub token: Option<String>,

    /// User to authenticate as (with --password), when the server requires
    /// authentication.
    ///
    /// Example: --user alice --password 'correct horse'
    #[arg(
        long,
        global = true,
        env = "SLUICE_USER",
        value_name = "NAME",
        requires = "password",
        display_order = 902
    )]
    pub user: Option<String>,

    /// Password of --user. Prefer SLUICE_PASSWORD: a flag is visible to
    /// other users of the machine in the process list.
    ///
    /// Example: SLUICE_PASSWORD='correct horse' sluice --user alice stream list
    #[arg(
        long,
        global = true,
        env = "SLUICE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        display_order = 903
    )]
    pub password: Option<String>,
}

impl ConnectionArgs {
    /// The node to talk to and the credentials given, if any.
    fn target(&self) -> hints::Target {
        let credentials = match (&self.token, &self.user, &self.password) {
            (Some(token), _, _) => Some(sluice::client::Credentials::Token(token.clone())),
            (None, Some(user), Some(password)) => Some(sluice::client::Credentials::UserPassword {
                username: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        hints::Target {
            server: self.server.clone(),
            credentials,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Sluice node (data shards, NATS bridge, metadata, admin HTTP).
    ///
    /// Settings come from the defaults, then --config FILE, then the flags.
    /// Logs go to stderr (RUST_LOG=debug for more). Ctrl-C or SIGTERM stops
    /// it after in-flight appends are synced.
    ///
    /// Example: sluice serve --data-dir /var/lib/sluice --nats-url nats://127.0.0.1:4222 --cores 1-3
    Serve(ServeArgs),

    /// Create, list, describe and delete streams.
    ///
    /// Example: sluice stream create orders --subject 'orders.*' --partitions 4
    #[command(subcommand)]
    Stream(StreamCommand),

    /// Publish messages through NATS and print Sluice's ack for each.
    ///
    /// Every stream bound to SUBJECT stores its own copy and acks it, so a
    /// message can get several acks: one line `stream=<s> partition=<p>
    /// offset=<o>` per ack. After a message's first ack, sluice waits 200 ms
    /// for acks from other streams. With no ack within 5 s it fails.
    ///
    /// Example: sluice publish orders '{"id":1}' --key user-42
    Publish(PublishArgs),

    /// Read the records of one stream partition.
    ///
    /// Reads from --from up to the end of the log (the high watermark when
    /// it starts), or forever with --follow. Text output is for people; use
    /// --format json in scripts.
    ///
    /// Example: sluice consume orders --partition 1 --from offset:100 --count 10
    Consume(ConsumeArgs),

    /// Grant, revoke and list per-stream access rules (ACLs).
    ///
    /// A rule lets a principal perform operations (publish, fetch, create,
    /// delete, admin) on every stream whose name matches a pattern (`*` any
    /// characters, `?` one). Rules are checked only when the server requires
    /// authentication; managing them needs a superuser (`superusers` in
    /// sluice.toml) or `admin` on the pattern `*`.
    ///
    /// Example: sluice --token $ADMIN_TOKEN acl grant --principal alice --stream 'orders.*' --ops publish,fetch
    #[command(subcommand)]
    Acl(AclCommand),

    /// Show the cluster: nodes and whether they are alive, and each
    /// partition's leader, epoch, replicas, ISR, high watermark and lag.
    ///
    /// Any node answers; it asks the metadata leader for liveness and the
    /// nodes for their progress (numbers a node did not report in time show
    /// as `-`).
    ///
    /// Example: sluice cluster status --server 10.0.0.5:9292 --json
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Hash a password for `password_hash` in the [auth] users of
    /// sluice.toml (Argon2id, random salt). Reads the password from the
    /// first line of stdin and prints the hash.
    ///
    /// Example: printf '%s' 'correct horse' | sluice hash-password
    HashPassword,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes (id, raft and client address, alive, metadata leader) and
    /// partitions (leader, epoch, replicas, ISR, high watermark, per-replica
    /// lag).
    ///
    /// Example: sluice cluster status --json
    Status {
        /// Print one JSON object instead of tables (for scripts).
        ///
        /// Example: --json
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Let a principal perform operations on the streams matching a pattern
    /// (added to what it already has there).
    ///
    /// Example: sluice acl grant --principal alice --stream 'orders.*' --ops publish,fetch
    Grant(AclGrantArgs),

    /// Take operations away from a rule (every operation without --ops).
    ///
    /// Example: sluice acl revoke --principal alice --stream 'orders.*' --ops publish
    Revoke(AclRevokeArgs),

    /// List the rules (all, or one principal's).
    ///
    /// Example: sluice acl list --principal alice
    List {
        /// Only this principal's rules.
        ///
        /// Example: --principal alice
        #[arg(long, value_name = "NAME")]
        principal: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct AclGrantArgs {
    /// Principal (as the server reports it on authentication), or a glob
    /// over principals (`*` = every authenticated principal).
    ///
    /// Example: --principal alice
    #[arg(long, value_name = "NAME")]
    pub principal: String,

    /// Stream name pattern: `*` matches any characters, `?` one.
    ///
    /// Example: --stream 'orders.*'
    #[arg(long, value_name = "PATTERN")]
    pub stream: String,

    /// Operations, comma-separated: publish, fetch (also list offsets and
    /// cursors), create, delete, admin (all of them; on --stream '*' also
    /// ACL management).
    ///
    /// Example: --ops publish,fetch
    #[arg(long, value_name = "OPS", value_delimiter = ',', required = true,
          value_parser = parse::parse_acl_operation)]
    pub ops: Vec<sluice::model::acl::AclOperation>,
}

#[derive(Debug, Args)]
pub struct AclRevokeArgs {
    /// Principal of the rule.
    ///
    /// Example: --principal alice
    #[arg(long, value_name = "NAME")]
    pub principal: String,

    /// Stream pattern of the rule, exactly as granted.
    ///
    /// Example: --stream 'orders.*'
    #[arg(long, value_name = "PATTERN")]
    pub stream: String,

    /// Operations to take away, comma-separated [default: all].
    ///
    /// Example: --ops publish
    #[arg(long, value_name = "OPS", value_delimiter = ',',
          value_parser = parse::parse_acl_operation)]
    pub ops: Vec<sluice::model::acl::AclOperation>,
}

/// `sluice serve` flags. Unset flags fall back to the config file, then to
/// the built-in defaults.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Settings file (TOML; same names as the flags, with underscores).
    /// Flags override it. Its `[auth]` section turns on authentication:
    /// `enabled`, `superusers`, `tokens = [{ token, principal }]`,
    /// `users = [{ username, password_hash, principal }]` (hashes from
    /// `sluice hash-password`), `node_token`, `authenticate_timeout_ms`.
    /// Its `[limits]` section sets every resource limit (connections_max,
    /// connections_per_principal_max, frame_body_bytes_max,
    /// batch_bytes_max, batch_records_max, record_headers_max,
    /// record_header_bytes_max, fetch_inflight_bytes_max, streams_max,
    /// partitions_max, cursors_max, idle_timeout_ms, frame_timeout_ms,
    /// write_timeout_ms; README lists the defaults).
    ///
    /// Example: --config /etc/sluice/sluice.toml
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for partition logs and cluster metadata
    /// [default: ./sluice-data].
    ///
    /// Example: --data-dir /var/lib/sluice
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// NATS server whose subjects the streams bind. Without it, Sluice
    /// starts its own nats-server on 127.0.0.1:4222 (the port NATS clients,
    /// `sluice publish` included, try by default) or, when that is taken, on
    /// a free loopback port whose URL it logs (give it to `--nats-url`).
    ///
    /// Example: --nats-url nats://127.0.0.1:4222
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,

    /// Address of shard 0's consumer port; shard k listens on PORT+k
    /// [default: 127.0.0.1:9292].
    ///
    /// Example: --listen 0.0.0.0:9292
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// Address of the admin HTTP endpoint (/metrics, /healthz)
    /// [default: 127.0.0.1:9280].
    ///
    /// Example: --admin 0.0.0.0:9280
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,

    /// This node's id: unique in the cluster, the same across restarts
    /// [default: 1].
    ///
    /// Example: --node-id 2
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,

    /// Address for cluster metadata (raft) traffic between nodes, and the
    /// address other nodes --join [default: 127.0.0.1:9281].
    ///
    /// Example: --raft 10.0.0.2:9281
    #[arg(long, value_name = "HOST:PORT")]
    pub raft: Option<String>,

    /// Join the cluster of the node whose --raft address this is (any
    /// member; it forwards to the metadata leader). Needed on the first
    /// start only, harmless later. Without --join (or `peers` in the config
    /// file) a new node forms a one-node cluster.
    ///
    /// Example: sluice serve --node-id 2 --raft 10.0.0.2:9281 --join 10.0.0.1:9281
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,

    /// A node the metadata leader has not heard from for this long is dead:
    /// the partitions it leads move to a live in-sync replica
    /// [default: 5000].
    ///
    /// Example: --node-timeout-ms 2000
    #[arg(long, value_name = "MS")]
    pub node_timeout_ms: Option<u64>,

    /// CPUs for the data shards, one shard per entry (an entry may repeat)
    /// [default: every online CPU except the control one, at least one].
    ///
    /// Example: --cores 1-3 or --cores 1,2,5
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,

    /// CPU of the control core (NATS bridge, metadata, admin) [default: 0].
    ///
    /// Example: --control-core 0
    #[arg(long, value_name = "N")]
    pub control_core: Option<usize>,

    /// When appends are fsynced: `always` (after every batch, before any ack:
    /// the default), `interval:MS` (at most once per MS ms; acks still wait
    /// for the sync, so latency rises), `never` (benchmarks only: acked data
    /// is lost if the machine crashes).
    ///
    /// Example: --sync interval:5
    #[arg(long, value_name = "POLICY", value_parser = parse::parse_sync)]
    pub sync: Option<String>,

    /// Log lines on stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line, for log shippers) [default: text; sluice.toml:
    /// log_format].
    ///
    /// Example: --log-format json
    #[arg(long, value_name = "FORMAT", value_parser = parse::parse_log_format)]
    pub log_format: Option<sluice::config::LogFormat>,

    /// Most client connections the node holds at once (all shard ports
    /// together); one more is answered with LimitExceeded and closed.
    /// Overrides `connections_max` in the `[limits]` section of
    /// sluice.toml, where every other limit is set.
    ///
    /// Example: --max-connections 20000
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// A follower that has not caught up with the partition leader for this
    /// many milliseconds leaves the in-sync replica set (and rejoins once it
    /// catches up) [default: 10000; sluice.toml: replica_lag_time_max_ms].
    ///
    /// Example: --replica-lag-time-max-ms 2000
    #[arg(long, value_name = "MS")]
    pub replica_lag_time_max_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream bound to a NATS subject.
    ///
    /// Creating a stream that exists with the same settings does nothing;
    /// with different settings it fails. Unset settings take the server's
    /// defaults.
    ///
    /// Example: sluice stream create orders --subject 'orders.*' --partitions 4 --retention-age 7d --retention-bytes 10GiB
    #[command(after_help = format!("{}\n{}", sluice::units::SIZE_HELP, sluice::units::DURATION_HELP))]
    Create(CreateArgs),

    /// List every stream (name, subject, group, partitions, replication).
    ///
    /// Example: sluice stream list
    List,

    /// Show a stream's settings and, per partition, its leader, shard, port,
    /// high watermark and log start offset; then its replication: leader
    /// epoch, replicas, ISR, log end and each replica's lag (`node:lag`,
    /// `*` = in sync).
    ///
    /// Example: sluice stream describe orders
    Describe {
        /// Stream to describe.
        ///
        /// Example: orders
        name: String,
    },

    /// Delete a stream and all its data, at once and for good.
    ///
    /// Example: sluice stream delete orders
    Delete {
        /// Stream to delete.
        ///
        /// Example: orders
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Stream name, unique in the cluster: 1-255 characters of
    /// [A-Za-z0-9._-], not starting with `.` or `_`.
    ///
    /// Example: orders
    pub name: String,

    /// NATS subject to store; `*` and `>` wildcards allowed. Partition 0
    /// takes SUBJECT, partition i > 0 takes SUBJECT.i.
    ///
    /// Example: --subject orders or --subject 'orders.>'
    #[arg(long, value_name = "SUBJ")]
    pub subject: String,

    /// Consumer group: streams of one group share the subject (a NATS queue
    /// group), so each message lands in exactly one of them.
    ///
    /// Example: --group billing
    #[arg(long, value_name = "G")]
    pub group: Option<String>,

    /// Number of partitions [default: the server's].
    ///
    /// Example: --partitions 4
    #[arg(long, value_name = "N", value_parser = parse::parse_partitions)]
    pub partitions: Option<u32>,

    /// Copies of each partition, leader included; at most the node count
    /// [default: the server's].
    ///
    /// Example: --replication-factor 3
    #[arg(long, value_name = "R", value_parser = parse::parse_replication_factor)]
    pub replication_factor: Option<u16>,

    /// In-sync replicas (leader included) that must have a record before an
    /// ack-`all` publish is acked; with fewer, such publishes are refused
    /// with NotEnoughReplicas. 1..=the replication factor [default: 1].
    ///
    /// Example: --replication-factor 3 --min-insync-replicas 2
    #[arg(long, value_name = "N", value_parser = parse::parse_replication_factor)]
    pub min_insync_replicas: Option<u16>,

    /// Delete records older than DUR (units us, ms, s, m, h, d, w; sums like
    /// 1h30m; a bare number is seconds; `unlimited` for no limit) [default:
    /// the server's]. Whole segments are deleted once all their records are
    /// past the limit.
    ///
    /// Example: --retention-age 7d
    #[arg(long, value_name = "DUR", value_parser = parse::parse_age_limit)]
    pub retention_age: Option<Limit>,

    /// Keep at most N bytes per partition (plain bytes or B, KB, MB, GB, TB,
    /// K/KiB, M/MiB, G/GiB, T/TiB; `unlimited` for no limit) [default: the
    /// server's].
    ///
    /// Example: --retention-bytes 10GiB
    #[arg(long, value_name = "N", value_parser = parse::parse_bytes_limit)]
    pub retention_bytes: Option<Limit>,

    /// Keep at most N records per partition (`unlimited` for no limit)
    /// [default: the server's].
    ///
    /// Example: --retention-messages 1000000
    #[arg(long, value_name = "N", value_parser = parse::parse_messages_limit)]
    pub retention_messages: Option<Limit>,

    /// Key compaction: keep only the latest record per key (records without
    /// a key are kept).
    ///
    /// Example: --compact
    #[arg(long)]
    pub compact: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// NATS subject to publish on; each stream bound to it stores a copy.
    /// Partition i > 0 of a stream on `orders` listens on `orders.i`.
    ///
    /// Example: orders or orders.2
    pub subject: String,

    /// Message payload. Without it, each line read from stdin (without its
    /// line ending) is one message.
    ///
    /// Example: '{"id":1}'
    pub message: Option<String>,

    /// Record key (the compaction key). The message is sent in a Sluice
    /// envelope so the key is stored.
    ///
    /// Example: --key user-42
    #[arg(long, value_name = "K")]
    pub key: Option<String>,

    /// Record header KEY=VALUE; repeat for more. Sent in a Sluice envelope
    /// (plain NATS publishers can use NATS message headers instead; Sluice
    /// stores those too).
    ///
    /// Example: --header trace=abc123 --header source=cli
    #[arg(long = "header", value_name = "K=V", value_parser = parse::parse_header)]
    pub headers: Vec<(String, String)>,

    /// Publish each message N times.
    ///
    /// Example: --count 1000
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse::parse_positive)]
    pub count: u64,

    /// NATS server to publish to: the one `sluice serve` uses.
    ///
    /// Example: --nats-url nats://10.0.0.5:4222
    #[arg(long, env = "SLUICE_NATS_URL", default_value = NATS_URL_DEFAULT, value_name = "URL")]
    pub nats_url: String,
}

/// How `sluice consume` prints records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `<offset> <subject> <key> <value>`, `-` for none; control characters
    /// escaped. For people.
    Text,
    /// One JSON object per line: offset, timestamp (ms), subject, key,
    /// value (or value_base64 when not UTF-8), headers. For scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Stream to read.
    ///
    /// Example: orders
    pub stream: String,

    /// Partition to read.
    ///
    /// Example: --partition 2
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub partition: u32,

    /// Where to start: `earliest` (oldest retained record), `latest` (only
    /// records committed from now on; useful with --follow), `offset:N`, or
    /// `time:RFC3339` (first record at or after that time).
    ///
    /// Example: --from offset:1200 or --from time:2024-05-01T12:00:00Z
    #[arg(long, value_name = "POSITION", default_value = "earliest", value_parser = parse::parse_start)]
    pub from: StartAt,

    /// Stop after N records.
    ///
    /// Example: --count 10
    #[arg(long, value_name = "N", value_parser = parse::parse_positive)]
    pub count: Option<u64>,

    /// Keep waiting for new records (long poll) after the end of the log,
    /// until --count records were printed or Ctrl-C.
    ///
    /// Example: --follow
    #[arg(long)]
    pub follow: bool,

    /// Output format.
    ///
    /// Example: --format json
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Resume from, and store, this consumer's position in Sluice. Starts
    /// at the stored position when there is one (else at --from) and
    /// stores the next offset to read every 1000 records or 5 s, and at exit
    /// (Ctrl-C included). The position is per (ID, stream, partition).
    /// IDs are 1-128 characters of [A-Za-z0-9._-].
    ///
    /// Example: sluice consume orders --cursor billing --follow
    #[arg(long, value_name = "ID", value_parser = parse::parse_cursor_id)]
    pub cursor: Option<String>,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let target = cli.connection.target();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Stream(command) => stream::run(&target, command),
        Command::Publish(args) => publish::run(args),
        Command::Consume(args) => consume::run(&target, args),
        Command::Acl(command) => acl::run(&target, command),
        Command::Cluster(command) => cluster::run(&target, command),
        Command::HashPassword => acl::hash_password(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_flag_has_help_with_an_example() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        let mut commands = vec![(String::from("sluice"), cli)];
        while let Some((path, command)) = commands.pop() {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let is_enum = !arg.get_possible_values().is_empty();
                if !help.contains("Example") && !is_enum {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let about = sub
                    .get_long_about()
                    .or(sub.get_about())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let name = format!("{path} {}", sub.get_name());
                if !about.contains("Example") && sub.get_name() != "help" {
                    missing.push(name.clone());
                }
                commands.push((name, sub.clone()));
            }
        }
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    }

    #[test]
    fn acl_commands_and_credentials_parse() {
        use sluice::model::acl::AclOperation;
        let cli = Cli::try_parse_from([
            "sluice",
            "--token",
            "t0k",
            "acl",
            "grant",
            "--principal",
            "alice",
            "--stream",
            "orders.*",
            "--ops",
            "publish,fetch",
        ])
        .expect("parses");
        assert!(matches!(
            cli.connection.target().credentials,
            Some(sluice::client::Credentials::Token(ref t)) if t == "t0k"
        ));
        let Command::Acl(AclCommand::Grant(grant)) = cli.command else {
            panic!("not acl grant");
        };
        assert_eq!(grant.ops, vec![AclOperation::Publish, AclOperation::Fetch]);
        let cli = Cli::try_parse_from([
            "sluice",
            "--user",
            "bob",
            "--password",
            "pw",
            "acl",
            "revoke",
            "--principal",
            "alice",
            "--stream",
            "orders.*",
        ])
        .expect("parses");
        assert!(matches!(
            cli.connection.target().credentials,
            Some(sluice::client::Credentials::UserPassword { ref username, .. }) if username == "bob"
        ));
        for bad in [
            &[
                "sluice",
                "acl",
                "grant",
                "--principal",
                "a",
                "--stream",
                "s",
            ][..],
            &[
                "sluice",
                "acl",
                "grant",
                "--principal",
                "a",
                "--stream",
                "s",
                "--ops",
                "read",
            ],
            &["sluice", "--user", "bob", "acl", "list"],
            &[
                "sluice",
                "--token",
                "t",
                "--user",
                "u",
                "--password",
                "p",
                "acl",
                "list",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_parse_as_documented() {
        let cli = Cli::try_parse_from([
            "sluice",
            "--server",
            "10.0.0.5:9300",
            "stream",
            "create",
            "orders",
            "--subject",
            "orders.>",
            "--group",
            "g",
            "--partitions",
            "4",
            "--replication-factor",
            "3",
            "--retention-age",
            "7d",
            "--retention-bytes",
            "10GiB",
            "--retention-messages",
            "unlimited",
            "--compact",
        ])
        .expect("parses");
        assert_eq!(cli.connection.server, "10.0.0.5:9300");
        let Command::Stream(StreamCommand::Create(create)) = cli.command else {
            panic!("not stream create");
        };
        assert_eq!(create.partitions, Some(4));
        assert_eq!(create.replication_factor, Some(3));
        assert_eq!(create.retention_age, Some(Limit::Max(7 * 86_400_000)));
        assert_eq!(create.retention_bytes, Some(Limit::Max(10 << 30)));
        assert_eq!(create.retention_messages, Some(Limit::Unlimited));
        assert!(create.compact);

        let cli = Cli::try_parse_from([
            "sluice",
            "publish",
            "orders",
            "hi",
            "--key",
            "k",
            "--header",
            "a=1",
            "--header",
            "b=2",
            "--count",
            "3",
            "--nats-url",
            "nats://h:1",
        ])
        .expect("parses");
        let Command::Publish(publish) = cli.command else {
            panic!("not publish");
        };
        assert_eq!(
            publish.headers,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            (publish.count, publish.nats_url.as_str()),
            (3, "nats://h:1")
        );

        let cli = Cli::try_parse_from([
            "sluice",
            "consume",
            "orders",
            "--partition",
            "2",
            "--from",
            "offset:5",
            "--count",
            "10",
            "--follow",
            "--format",
            "json",
        ])
        .expect("parses");
        let Command::Consume(consume) = cli.command else {
            panic!("not consume");
        };
        assert_eq!((consume.partition, consume.from), (2, StartAt::Offset(5)));
        assert_eq!(
            (consume.count, consume.follow, consume.format),
            (Some(10), true, Format::Json)
        );

        let cli = Cli::try_parse_from([
            "sluice",
            "serve",
            "--config",
            "s.toml",
            "--data-dir",
            "/d",
            "--nats-url",
            "nats://x",
            "--listen",
            "0.0.0.0:9292",
            "--admin",
            "0.0.0.0:9293",
            "--cores",
            "1-3",
            "--control-core",
            "0",
            "--sync",
            "interval:5",
        ])
        .expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(serve.sync.as_deref(), Some("interval:5"));
        assert_eq!(serve.cores.as_deref(), Some("1-3"));

        for bad in [
            &["sluice", "serve", "--sync", "sometimes"][..],
            &["sluice", "consume", "s", "--from", "yesterday"],
            &[
                "sluice",
                "stream",
                "create",
                "s",
                "--subject",
                "s",
                "--retention-age",
                // A bare number is seconds now (one meaning with
                // sluice-bench); a unit that does not exist is still refused.
                "7x",
            ],
            &["sluice", "publish", "s", "--header", "novalue"],
            &["sluice", "publish", "s", "--count", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    /// Every command that takes a size or a duration explains the units in
    /// its `--help` (one meaning with sluice-bench: `sluice::units`).
    #[test]
    fn unit_rules_are_in_the_help_of_commands_that_take_sizes_or_durations() {
        let mut cli = Cli::command();
        let create = cli
            .find_subcommand_mut("stream")
            .and_then(|stream| stream.find_subcommand_mut("create"))
            .expect("stream create");
        let help = create.render_long_help().to_string();
        assert!(help.contains(sluice::units::SIZE_HELP), "{help}");
        assert!(help.contains(sluice::units::DURATION_HELP), "{help}");
        let cli = Cli::try_parse_from([
            "sluice",
            "stream",
            "create",
            "s",
            "--subject",
            "s",
            "--retention-age",
            "90",
            "--retention-bytes",
            "1M",
        ])
        .expect("parses");
        let Command::Stream(StreamCommand::Create(create)) = cli.command else {
            panic!("not stream create");
        };
        assert_eq!(create.retention_age, Some(Limit::Max(90_000)));
        assert_eq!(create.retention_bytes, Some(Limit::Max(1 << 20)));
    }
}
