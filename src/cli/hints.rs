//! Client errors as messages that say what to do next.

use std::io;

use anyhow::anyhow;
use sluice::client::{Client, ClientError, Credentials};
use sluice::protocol::error_code::ErrorCode;

/// What the failed command was about, for the advice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    pub stream: Option<&'a str>,
    pub partition: Option<u32>,
}

impl<'a> Subject<'a> {
    pub fn stream(stream: &'a str) -> Subject<'a> {
        Subject {
            stream: Some(stream),
            partition: None,
        }
    }
}

/// The node a command talks to, and how it authenticates (`--server`,
/// `--token` or `--user` + `--password`).
#[derive(Debug)]
pub struct Target {
    pub server: String,
    pub credentials: Option<Credentials>,
}

/// Connects to the target and authenticates when credentials were given,
/// explaining a failure.
pub fn connect(target: &Target) -> anyhow::Result<Client> {
    let mut client =
        Client::connect(&target.server).map_err(|error| explain(error, Subject::default()))?;
    if let Some(credentials) = &target.credentials {
        client
            .authenticate(credentials.clone())
            .map_err(|error| explain(error, Subject::default()))?;
    }
    Ok(client)
}

/// `error` with advice for the person at the terminal.
pub fn explain(error: ClientError, about: Subject<'_>) -> anyhow::Error {
    let stream = about.stream.unwrap_or("?");
    match &error {
        ClientError::Resolve { addr, reason } => anyhow!(
            "cannot resolve {addr}: {reason} — set --server or SLUICE_SERVER to HOST:PORT of a Sluice node"
        ),
        ClientError::Connect { addr, source } => anyhow!(
            "cannot connect to {addr}: {} — is `sluice serve` running? (set --server or SLUICE_SERVER)",
            describe_io(source)
        ),
        ClientError::Io { .. } => anyhow!(
            "{error} — the connection to the server broke; is `sluice serve` still running?"
        ),
        ClientError::Timeout { .. } => {
            anyhow!("{error} — the server is overloaded, stuck or unreachable")
        }
        ClientError::Protocol { .. } => anyhow!(
            "{error} — is the address a Sluice consumer port of a compatible version?"
        ),
        ClientError::InvalidRequest(_) => anyhow!(error),
        ClientError::OffsetOutOfRange {
            log_start,
            high_watermark,
            ..
        } => anyhow!(
            "offset out of range: {stream} partition {} holds offsets {}..{} — use --from earliest, --from latest or an offset in that range",
            about.partition.unwrap_or(0),
            log_start.0,
            high_watermark.0
        ),
        ClientError::Server { code, message, .. } => server_error(*code, message, about),
    }
}

fn server_error(code: ErrorCode, message: &str, about: Subject<'_>) -> anyhow::Error {
    let stream = about.stream.unwrap_or("?");
    match code {
        ErrorCode::StreamNotFound => anyhow!(
            "stream {stream} does not exist — `sluice stream list` shows the streams"
        ),
        ErrorCode::PartitionNotFound => anyhow!(
            "stream {stream} has no partition {} — `sluice stream describe {stream}` shows its partitions",
            about.partition.unwrap_or(0)
        ),
        ErrorCode::StreamExists => anyhow!(
            "stream {stream} already exists with different settings ({message}) — delete it first (`sluice stream delete {stream}`) or pick another name"
        ),
        ErrorCode::InvalidRequest => anyhow!("the server refused the request: {message}"),
        ErrorCode::NotLeader | ErrorCode::PartitionFailed | ErrorCode::ShuttingDown => anyhow!(
            "{code}: {message} — the partition is moving or recovering; retry in a moment"
        ),
        ErrorCode::AuthRequired => anyhow!(
            "{code}: {message} — the server requires authentication: give --token (or SLUICE_TOKEN), or --user and --password (or SLUICE_USER and SLUICE_PASSWORD)"
        ),
        ErrorCode::AuthFailed => anyhow!(
            "{code}: {message} — check --token, or --user and --password (and the SLUICE_TOKEN, SLUICE_USER, SLUICE_PASSWORD variables)"
        ),
        ErrorCode::NotAuthorized => anyhow!(
            "{code}: {message} — ask an administrator for access (`sluice acl grant --principal YOU --stream {stream} --ops ...`)"
        ),
        _ => anyhow!("{code}: {message}"),
    }
}

/// `connection refused` rather than `Connection refused (os error 111)`.
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_owned(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "unreachable".to_owned()
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn refused_connections_say_what_to_do() {
        let error = ClientError::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 9292)),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            explain(error, Subject::default()).to_string(),
            "cannot connect to 127.0.0.1:9292: connection refused — is `sluice serve` running? (set --server or SLUICE_SERVER)"
        );
    }

    #[test]
    fn server_errors_name_the_stream() {
        let error = ClientError::Server {
            code: ErrorCode::StreamNotFound,
            message: "no stream".into(),
            right_port: None,
        };
        let text = explain(error, Subject::stream("orders")).to_string();
        assert!(text.contains("stream orders does not exist"), "{text}");
        assert!(text.contains("sluice stream list"), "{text}");
    }
}
