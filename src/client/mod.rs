//! A small synchronous client for the Sluice TCP protocol
//! (`docs/protocol.md`), used by the `sluice` command line, tests and the
//! bench.
//!
//! Blocking `std::net::TcpStream`s with connect, read and write timeouts; one
//! request at a time per connection. The client is **shard-aware**: it keeps
//! one connection per port, sends Metadata, CreateStream and DeleteStream to
//! the address it was given, and sends partition requests (Fetch, Publish,
//! ListOffsets, and SetCursor/FetchCursor, which the server would also route
//! from any port) to the port that owns the partition — learned from Metadata
//! ([`Client::metadata`] records every partition's port) or from a
//! `WrongShard` answer, after which the request is retried once on
//! `right_port` of the same host. A `NotLeader` answer refreshes the
//! stream's metadata and retries once.
//!
//! ```no_run
//! use sluice::client::{Client, FetchStart};
//! use shards::types::Offset;
//! use std::time::Duration;
//!
//! let mut client = Client::connect("127.0.0.1:9292")?;
//! client.metadata()?; // learn which port owns which partition
//! let fetched = client.fetch("orders", 0, FetchStart::Offset(Offset(0)), 1 << 20, Duration::ZERO)?;
//! for record in &fetched.records {
//!     println!("{} {:?}", record.offset.0, record.value);
//! }
//! # Ok::<(), sluice::client::ClientError>(())
//! ```
//!
//! Every length the server sends is checked against the limits of
//! `protocol::limits` before anything is allocated for it; an I/O error, a
//! timeout or a protocol violation drops that connection (the next call
//! reconnects), so a half-read answer can never be mistaken for the next one.

mod access;
mod cluster;
mod connection;
mod error;
mod types;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use shards::batch::{decode_batch, encode_batch, encoded_len, BatchIter, DecodedRecord, Record};
use shards::constants::{BATCH_RECORDS_MAX, RECORD_HEADERS_MAX};
use shards::types::{LeaderEpoch, Offset};

pub use self::access::Credentials;
pub use self::cluster::{ClusterStatus, NodeState, PartitionState, ReplicaState};
use self::connection::{duration_ms, Connection, Response};
pub use self::error::ClientError;
pub use self::types::{
    BrokerMetadata, ClusterMetadata, CreatedStream, FetchResult, FetchStart, Limit, ListedOffset,
    OffsetQuery, PartitionFailure, PartitionMetadata, StreamConfig, StreamMetadata,
};
use crate::cursor::{cursor_partition, CursorKey};
use crate::model::{NodeId, CURSORS_STREAM};
use crate::protocol::create_stream::CreateStreamRequest;
use crate::protocol::delete_stream::{DeleteStreamRequest, DeleteStreamResponse};
use crate::protocol::envelope::AckPolicy;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::fetch::{FetchRequest, FetchResponse};
use crate::protocol::fetch_cursor::{FetchCursorRequest, FetchCursorResponse};
use crate::protocol::frame::FrameKind;
use crate::protocol::limits::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, PUBLISH_BATCH_BYTES_MAX};
use crate::protocol::list_offsets::ListOffsetsRequest;
use crate::protocol::metadata::MetadataRequest;
use crate::protocol::offset_for_leader_epoch::{EpochAnswer, EpochQuery};
use crate::protocol::publish::{PublishRequest, PublishResponse};
use crate::protocol::set_cursor::{SetCursorRequest, SetCursorResponse};

/// Default time to establish a TCP connection.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default time a request may take to be written and answered (a fetch's
/// long-poll wait is added on top).
pub const IO_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Most connections one client keeps open (one per port it has talked to);
/// beyond it, another one is closed first. Each costs a socket and a 64 KiB
/// read buffer.
pub const CONNECTIONS_MAX: usize = 64;
/// Most (stream, partition) → port routes remembered; the cache is cleared
/// when it would grow past this.
pub const ROUTES_MAX: usize = 1 << 16;

/// Timeouts of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// Read and write timeout of one request (plus a fetch's `max_wait`).
    pub io_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            io_timeout: IO_TIMEOUT_DEFAULT,
        }
    }
}

/// A blocking, shard-aware connection pool to one Sluice node (see the
/// module docs).
pub struct Client {
    /// The address given to [`Client::connect`]; metadata requests go here.
    bootstrap: SocketAddr,
    config: ClientConfig,
    connections: HashMap<SocketAddr, Connection>,
    routes: HashMap<(String, u32), SocketAddr>,
    /// Set by [`Client::authenticate`]: every new connection authenticates
    /// with these before its first request.
    credentials: Option<Credentials>,
    /// What the server called us when we last authenticated.
    principal: Option<String>,
}

impl Client {
    /// Connects to `addr` (`host:port`) with the default timeouts.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientConfig::default())
    }

    /// Connects to `addr` (`host:port`). The connection is made at once, so
    /// an unreachable server is reported here.
    pub fn connect_with(addr: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let bootstrap = resolve(addr)?;
        let connection = Connection::open(bootstrap, &config)?;
        Ok(Client {
            bootstrap,
            config,
            connections: HashMap::from([(bootstrap, connection)]),
            routes: HashMap::new(),
            credentials: None,
            principal: None,
        })
    }

    /// The address this client was connected to.
    pub fn server_addr(&self) -> SocketAddr {
        self.bootstrap
    }

    /// Describes every stream, and remembers each partition's port.
    pub fn metadata(&mut self) -> Result<ClusterMetadata, ClientError> {
        self.metadata_for(&[])
    }

    /// Describes the named streams (all when `streams` is empty); a name that
    /// does not exist comes back with `error = Some(StreamNotFound)`.
    pub fn metadata_for(&mut self, streams: &[&str]) -> Result<ClusterMetadata, ClientError> {
        let body = MetadataRequest {
            streams: streams.iter().map(|name| (*name).to_owned()).collect(),
        }
        .encode();
        let metadata = self.call(
            self.bootstrap,
            FrameKind::MetadataRequest,
            &body,
            |c, body| {
                ClusterMetadata::decode(&body).map_err(|e| ClientError::protocol(c.addr(), e))
            },
        )?;
        self.learn_routes(&metadata);
        Ok(metadata)
    }

    /// Creates a stream. Creating one that exists with the same settings
    /// succeeds with `created = false`; different settings fail with
    /// [`ErrorCode::StreamExists`].
    pub fn create_stream(&mut self, config: &StreamConfig) -> Result<CreatedStream, ClientError> {
        let body = CreateStreamRequest {
            config: config.clone(),
        }
        .encode();
        let created = self.call(
            self.bootstrap,
            FrameKind::CreateStreamRequest,
            &body,
            |c, body| CreatedStream::decode(&body).map_err(|e| ClientError::protocol(c.addr(), e)),
        )?;
        self.learn_stream_routes(&created.stream, &HashMap::new());
        Ok(created)
    }

    /// Deletes a stream ([`ErrorCode::StreamNotFound`] if there is none).
    pub fn delete_stream(&mut self, name: &str) -> Result<(), ClientError> {
        let body = DeleteStreamRequest { name }.encode();
        self.call(
            self.bootstrap,
            FrameKind::DeleteStreamRequest,
            &body,
            |c, body| {
                DeleteStreamResponse::decode(&body)
                    .map(drop)
                    .map_err(|e| ClientError::protocol(c.addr(), e))
            },
        )?;
        self.routes.retain(|(stream, _), _| stream != name);
        Ok(())
    }

    /// Looks up the log start, the high watermark, or the first offset at or
    /// after a timestamp.
    pub fn list_offsets(
        &mut self,
        stream: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<ListedOffset, ClientError> {
        wire_partition(partition)?;
        let body = ListOffsetsRequest {
            stream,
            partition,
            query,
        }
        .encode();
        let request = PartitionRequest {
            stream,
            partition,
            kind: FrameKind::ListOffsetsRequest,
            body: &body,
            extra_wait: Duration::ZERO,
        };
        self.partition_call(&request, |c, body| {
            ListedOffset::decode(&body).map_err(|e| ClientError::protocol(c.addr(), e))
        })
    }

    /// Asks the partition leader where `leader_epoch` ended in its log
    /// (KIP-101): the largest epoch ≤ `leader_epoch` it knows and that
    /// epoch's end offset, or `None` when it knows no such epoch. A
    /// replica passes its node id and the partition's current epoch, which
    /// the leader checks (`FencedLeaderEpoch` / `UnknownLeaderEpoch`).
    pub fn offset_for_leader_epoch(
        &mut self,
        stream: &str,
        partition: u32,
        leader_epoch: LeaderEpoch,
        replica_id: Option<NodeId>,
        current_leader_epoch: Option<u32>,
    ) -> Result<Option<(LeaderEpoch, Offset)>, ClientError> {
        wire_partition(partition)?;
        let body = EpochQuery {
            stream,
            partition,
            replica_id,
            leader_epoch,
            current_leader_epoch,
        }
        .encode();
        let request = PartitionRequest {
            stream,
            partition,
            kind: FrameKind::OffsetForLeaderEpochRequest,
            body: &body,
            extra_wait: Duration::ZERO,
        };
        self.partition_call(&request, |c, body| {
            let answer =
                EpochAnswer::decode(&body).map_err(|e| ClientError::protocol(c.addr(), e))?;
            match answer.error {
                None => Ok(answer.end),
                Some(code) => Err(ClientError::Server {
                    code,
                    message: format!("OffsetForLeaderEpoch refused for {stream}/{partition}"),
                    right_port: None,
                }),
            }
        })
    }

    /// Fetches committed records from `start`, at most about `max_bytes`
    /// (capped at 32 MiB; at least one whole batch when one is available),
    /// waiting up to `max_wait` (capped at 30 s) when nothing is available.
    ///
    /// Records below the start position are skipped (the first batch may
    /// begin before it). An offset outside the log is
    /// [`ClientError::OffsetOutOfRange`], which carries both watermarks.
    pub fn fetch(
        &mut self,
        stream: &str,
        partition: u32,
        start: FetchStart,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<FetchResult, ClientError> {
        let max_wait_ms = u32::try_from(duration_ms(max_wait))
            .unwrap_or(u32::MAX)
            .min(FETCH_WAIT_MS_MAX);
        wire_partition(partition)?;
        let body = FetchRequest::consumer(
            stream,
            partition,
            start,
            max_bytes.min(FETCH_BYTES_MAX),
            max_wait_ms,
        )
        .encode();
        let request = PartitionRequest {
            stream,
            partition,
            kind: FrameKind::FetchRequest,
            body: &body,
            extra_wait: Duration::from_millis(max_wait_ms.into()),
        };
        let mut addr = self.bootstrap;
        let (header, raw) = self.partition_call(&request, |connection, body| {
            addr = connection.addr();
            read_fetch_answer(connection, &body)
        })?;
        // A successful answer carries both watermarks.
        let watermark = |value: Option<Offset>, what: &str| {
            value.ok_or_else(|| ClientError::protocol(addr, format!("fetch {what} -1 is negative")))
        };
        let high_watermark = watermark(header.high_watermark, "high_watermark")?;
        let log_start = watermark(header.log_start_offset, "log_start_offset")?;
        let (records, last_batch_end) =
            decode_fetched(&raw, start, log_start).map_err(|e| ClientError::protocol(addr, e))?;
        let next_offset = last_batch_end.unwrap_or(match start {
            FetchStart::Offset(offset) => offset,
            FetchStart::Earliest => log_start,
            FetchStart::Latest | FetchStart::Timestamp(_) => high_watermark,
        });
        Ok(FetchResult {
            high_watermark,
            log_start,
            records,
            next_offset,
        })
    }

    /// Publishes `records` as one RecordBatch under the stream's default ack
    /// policy and returns the offsets of the first and last record once the
    /// batch is committed.
    ///
    /// If the stream's default ack policy is `None` the server does not
    /// answer and this times out: use [`Client::publish_with_policy`].
    /// A [`ClientError::Timeout`] means the outcome is unknown.
    pub fn publish(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
    ) -> Result<(Offset, Offset), ClientError> {
        self.publish_inner(stream, partition, records, None)
    }

    /// Like [`Client::publish`] with an explicit ack policy, `Leader` or
    /// `All` (`None` — fire and forget — is not offered by this synchronous
    /// client: its errors would arrive unasked).
    pub fn publish_with_policy(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        ack_policy: AckPolicy,
    ) -> Result<(Offset, Offset), ClientError> {
        if ack_policy == AckPolicy::None {
            return Err(ClientError::InvalidRequest(
                "ack policy None is not supported by the synchronous client".into(),
            ));
        }
        self.publish_inner(stream, partition, records, Some(ack_policy))
    }

    fn publish_inner(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        ack_policy: Option<AckPolicy>,
    ) -> Result<(Offset, Offset), ClientError> {
        check_publish(records)?;
        let mut batch = Vec::with_capacity(encoded_len(records));
        encode_batch(Offset(0), records, &mut batch);
        wire_partition(partition)?;
        let body = PublishRequest {
            stream,
            partition,
            ack_policy,
            batch: Some(&batch),
        }
        .encode();
        drop(batch);
        let request = PartitionRequest {
            stream,
            partition,
            kind: FrameKind::PublishRequest,
            body: &body,
            extra_wait: Duration::ZERO,
        };
        let answer = self.partition_call(&request, |c, body| {
            PublishResponse::decode(&body).map_err(|e| ClientError::protocol(c.addr(), e))
        })?;
        let (base, last) = (answer.base_offset, answer.last_offset);
        let expected = base.plus(records.len() as u64 - 1);
        if last != expected {
            let addr = self.route(stream, partition);
            return Err(ClientError::protocol(
                addr,
                format!(
                    "{} records published as offsets {}..={}",
                    records.len(),
                    base.0,
                    last.0
                ),
            ));
        }
        Ok((base, last))
    }

    /// Stores cursor `cursor_id`'s position in `stream`/`partition`: `next`
    /// is the next offset the consumer will read. Returns once the cursor
    /// is durable on the server. Cursor ids are 1..=128 bytes of
    /// `[A-Za-z0-9._-]`.
    ///
    /// The request goes to the partition's port (any port would do: the
    /// server routes cursor requests to the shard that stores the cursor).
    pub fn set_cursor(
        &mut self,
        cursor_id: &str,
        stream: &str,
        partition: u32,
        next: Offset,
    ) -> Result<(), ClientError> {
        wire_partition(partition)?;
        let body = SetCursorRequest {
            cursor_id,
            stream,
            partition,
            offset: next,
        }
        .encode();
        let key = cursor_key(cursor_id, stream, partition);
        self.cursor_call(&key, FrameKind::SetCursorRequest, &body, |c, body| {
            SetCursorResponse::decode(&body)
                .map(drop)
                .map_err(|e| ClientError::protocol(c.addr(), e))
        })
    }

    /// The position stored for cursor `cursor_id` in `stream`/`partition`
    /// (the next offset to read), or `None` when none is stored for the
    /// stream as it is now (one saved before the stream was deleted and
    /// re-created under the same name is none).
    pub fn fetch_cursor(
        &mut self,
        cursor_id: &str,
        stream: &str,
        partition: u32,
    ) -> Result<Option<Offset>, ClientError> {
        wire_partition(partition)?;
        let body = FetchCursorRequest {
            cursor_id,
            stream,
            partition,
        }
        .encode();
        let key = cursor_key(cursor_id, stream, partition);
        self.cursor_call(&key, FrameKind::FetchCursorRequest, &body, |c, body| {
            FetchCursorResponse::decode(&body)
                .map(|answer| answer.offset)
                .map_err(|e| ClientError::protocol(c.addr(), e))
        })
    }

    /// A cursor request, sent to the stream partition's port (the server
    /// routes it to the shard storing the cursor). A node that does not lead
    /// the cursor's `__cursors` partition answers `NotLeader`: the request is
    /// then sent once more, to that partition's leader as Metadata has it.
    fn cursor_call<T>(
        &mut self,
        key: &CursorKey,
        kind: FrameKind,
        body: &[u8],
        mut read: impl FnMut(&mut Connection, Bytes) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let addr = self.route(&key.stream, key.partition);
        match self.call(addr, kind, body, &mut read) {
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                ..
            }) => {
                let metadata = self.metadata_for(&[CURSORS_STREAM])?;
                let partitions = metadata
                    .stream(CURSORS_STREAM)
                    .map_or(1, |s| s.partitions.len().max(1) as u32);
                let leader = self.route(CURSORS_STREAM, cursor_partition(key, partitions));
                self.call(leader, kind, body, read)
            }
            other => other,
        }
    }

    /// Sends a partition request to the partition's port, following one
    /// `WrongShard` redirect or one `NotLeader` metadata refresh.
    fn partition_call<T>(
        &mut self,
        request: &PartitionRequest<'_>,
        mut read: impl FnMut(&mut Connection, Bytes) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let (stream, partition) = (request.stream, request.partition);
        let mut addr = self.route(stream, partition);
        let mut retried = false;
        loop {
            let result = self.call_waiting(
                addr,
                request.kind,
                request.body,
                request.extra_wait,
                &mut read,
            );
            let next = match &result {
                Err(ClientError::Server {
                    code: ErrorCode::WrongShard,
                    right_port: Some(port),
                    ..
                }) if !retried => Some(SocketAddr::new(addr.ip(), *port)),
                Err(ClientError::Server {
                    code: ErrorCode::NotLeader,
                    ..
                }) if !retried => {
                    self.metadata_for(&[stream])?;
                    Some(self.route(stream, partition)).filter(|next| *next != addr)
                }
                _ => None,
            };
            match next {
                Some(next) => {
                    self.remember(stream, partition, next);
                    addr = next;
                    retried = true;
                }
                None => return result,
            }
        }
    }

    fn call<T>(
        &mut self,
        addr: SocketAddr,
        kind: FrameKind,
        body: &[u8],
        mut read: impl FnMut(&mut Connection, Bytes) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.call_waiting(addr, kind, body, Duration::ZERO, &mut read)
    }

    /// One request on the connection to `addr` (opened if needed). The
    /// connection is dropped when the outcome leaves it unusable.
    fn call_waiting<T>(
        &mut self,
        addr: SocketAddr,
        kind: FrameKind,
        body: &[u8],
        extra_wait: Duration,
        read: &mut impl FnMut(&mut Connection, Bytes) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let connection = self.connection(addr)?;
        let result = match connection.request(kind, body, extra_wait) {
            Ok(Response::Body(body)) => read(connection, body),
            Ok(Response::Error(error)) => Err(ClientError::Server {
                code: error.code,
                message: error.message,
                right_port: error.right_port,
            }),
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            if error.breaks_connection() {
                self.connections.remove(&addr);
            }
        }
        result
    }

    fn connection(&mut self, addr: SocketAddr) -> Result<&mut Connection, ClientError> {
        if !self.connections.contains_key(&addr) {
            if self.connections.len() >= CONNECTIONS_MAX {
                let victim = self
                    .connections
                    .keys()
                    .copied()
                    .find(|a| *a != self.bootstrap);
                if let Some(victim) = victim {
                    self.connections.remove(&victim);
                }
            }
            let mut connection = Connection::open(addr, &self.config)?;
            if let Some(credentials) = &self.credentials {
                self.principal = Some(access::authenticate_connection(
                    &mut connection,
                    credentials,
                )?);
            }
            self.connections.insert(addr, connection);
        }
        self.connections
            .get_mut(&addr)
            .ok_or_else(|| ClientError::protocol(addr, "connection vanished from the pool"))
    }

    /// The address a partition request goes to: its learned port, else the
    /// bootstrap address (which redirects with `WrongShard` if need be).
    fn route(&self, stream: &str, partition: u32) -> SocketAddr {
        self.routes
            .get(&(stream.to_owned(), partition))
            .copied()
            .unwrap_or(self.bootstrap)
    }

    fn remember(&mut self, stream: &str, partition: u32, addr: SocketAddr) {
        if self.routes.len() >= ROUTES_MAX {
            self.routes.clear();
        }
        self.routes.insert((stream.to_owned(), partition), addr);
    }

    fn learn_routes(&mut self, metadata: &ClusterMetadata) {
        let hosts: HashMap<NodeId, IpAddr> = metadata
            .brokers
            .iter()
            .map(|broker| (broker.node_id, self.broker_ip(&broker.host)))
            .collect();
        for stream in &metadata.streams {
            self.learn_stream_routes(stream, &hosts);
        }
    }

    /// Records each partition's `leader host : consumer_port`. A leader whose
    /// host is unknown is assumed to be the node this client talks to.
    fn learn_stream_routes(&mut self, stream: &StreamMetadata, hosts: &HashMap<NodeId, IpAddr>) {
        if stream.error.is_some() {
            return;
        }
        for partition in &stream.partitions {
            let Some(leader) = partition.leader else {
                continue;
            };
            if partition.consumer_port == 0 {
                continue;
            }
            let ip = hosts.get(&leader).copied().unwrap_or(self.bootstrap.ip());
            let addr = SocketAddr::new(ip, partition.consumer_port);
            self.remember(&stream.config.name, partition.partition, addr);
        }
    }

    /// A broker's advertised host as an IP; the bootstrap IP when the host
    /// is empty, a wildcard (`0.0.0.0`, `::`) or does not resolve.
    fn broker_ip(&self, host: &str) -> IpAddr {
        let resolved = match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) if host.is_empty() => None,
            Err(_) => (host, 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .map(|addr| addr.ip()),
        };
        resolved
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(self.bootstrap.ip())
    }
}

/// A request addressed to one partition.
struct PartitionRequest<'a> {
    stream: &'a str,
    partition: u32,
    kind: FrameKind,
    body: &'a [u8],
    /// Added to the read timeout (a fetch's long-poll wait).
    extra_wait: Duration,
}

/// The first `host:port` address `addr` resolves to.
fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    let error = |reason: String| ClientError::Resolve {
        addr: addr.to_owned(),
        reason,
    };
    addr.to_socket_addrs()
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("no address".to_owned()))
}

fn wire_partition(partition: u32) -> Result<i32, ClientError> {
    i32::try_from(partition).map_err(|_| {
        ClientError::InvalidRequest(format!(
            "partition {partition} does not fit the wire's int32"
        ))
    })
}

/// Checks a publish against the batch limits before encoding it.
fn check_publish(records: &[Record]) -> Result<(), ClientError> {
    let invalid = |reason: String| Err(ClientError::InvalidRequest(reason));
    if records.is_empty() {
        return invalid("a publish needs at least one record".into());
    }
    if records.len() > BATCH_RECORDS_MAX {
        return invalid(format!(
            "{} records exceed the batch limit of {BATCH_RECORDS_MAX}",
            records.len()
        ));
    }
    if let Some(index) = records
        .iter()
        .position(|r| r.headers.len() > RECORD_HEADERS_MAX)
    {
        return invalid(format!(
            "record {index} has more than {RECORD_HEADERS_MAX} headers"
        ));
    }
    let bytes = encoded_len(records);
    if bytes > PUBLISH_BATCH_BYTES_MAX {
        return invalid(format!(
            "batch of {bytes} bytes exceeds the publish limit of {PUBLISH_BATCH_BYTES_MAX}"
        ));
    }
    Ok(())
}

/// Reads the rest of a fetch answer after its header frame: checks the
/// header, then reads exactly `byte_count` raw bytes.
fn read_fetch_answer(
    connection: &mut Connection,
    body: &[u8],
) -> Result<(FetchResponse, Bytes), ClientError> {
    let addr = connection.addr();
    let header = FetchResponse::decode(body).map_err(|e| ClientError::protocol(addr, e))?;
    if header.byte_count > FETCH_BYTES_MAX {
        return Err(ClientError::protocol(
            addr,
            format!(
                "fetch byte_count {} exceeds {FETCH_BYTES_MAX}",
                header.byte_count
            ),
        ));
    }
    if let Some(code) = header.error {
        let message = &header.error_message;
        if header.byte_count != 0 {
            return Err(ClientError::protocol(
                addr,
                "failed fetch announces raw bytes",
            ));
        }
        return Err(
            match (code, header.log_start_offset, header.high_watermark) {
                (ErrorCode::OffsetOutOfRange, Some(log_start), Some(high_watermark)) => {
                    ClientError::OffsetOutOfRange {
                        message: message.clone(),
                        log_start,
                        high_watermark,
                    }
                }
                _ => ClientError::Server {
                    code,
                    message: message.clone(),
                    right_port: None,
                },
            },
        );
    }
    // byte_count <= FETCH_BYTES_MAX (32 MiB) was checked above.
    let raw = connection.read_raw(header.byte_count as usize)?;
    Ok((header, raw))
}

/// Decodes fetched batches, skipping records before the start position.
/// Returns the records and the offset after the last batch (if any).
fn decode_fetched(
    raw: &Bytes,
    start: FetchStart,
    log_start: Offset,
) -> Result<(Vec<DecodedRecord>, Option<Offset>), String> {
    let mut records = Vec::new();
    let mut end: Option<Offset> = None;
    for item in BatchIter::new(raw) {
        let (header, slice) = item.map_err(|e| format!("fetched batch: {e}"))?;
        if end.is_some_and(|end| header.base_offset < end) {
            return Err(format!(
                "fetched batch at offset {} overlaps the previous one",
                header.base_offset.0
            ));
        }
        let (_, batch) =
            decode_batch(&raw.slice_ref(slice)).map_err(|e| format!("fetched batch: {e}"))?;
        let first_batch = end.is_none();
        end = Some(header.next_offset());
        let mut batch = batch.into_iter().peekable();
        if first_batch {
            if let FetchStart::Timestamp(at) = start {
                // Skip what precedes the first record at or after `at`.
                while batch.next_if(|record| record.timestamp < at).is_some() {}
            }
        }
        records.extend(batch.filter(|record| match start {
            FetchStart::Offset(offset) => record.offset >= offset,
            FetchStart::Earliest => record.offset >= log_start,
            FetchStart::Latest | FetchStart::Timestamp(_) => true,
        }));
    }
    Ok((records, end))
}

fn cursor_key(cursor_id: &str, stream: &str, partition: u32) -> CursorKey {
    CursorKey {
        cursor_id: cursor_id.to_owned(),
        stream: stream.to_owned(),
        partition,
    }
}
