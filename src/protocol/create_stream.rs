//! `CreateStream` (kind `0x02`, answer `0x82`): creates a stream, or
//! confirms one that exists with the same settings.

use flatbuffers::FlatBufferBuilder;

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use super::metadata::StreamMetadata;
use super::stream_config::StreamConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateStreamRequest {
    pub config: StreamConfig,
}

impl CreateStreamRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let config = self.config.encode_into(&mut fbb);
        let root = fb::CreateStreamRequest::create(
            &mut fbb,
            &fb::CreateStreamRequestArgs {
                config: Some(config),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    /// A request without a config is an error (there is nothing to create).
    pub fn decode(body: &[u8]) -> Result<CreateStreamRequest, DecodeError> {
        let request = read_body::<fb::CreateStreamRequest>(body)?;
        let config = request.config().ok_or_else(|| {
            DecodeError::field(
                "CreateStreamRequest",
                "config",
                "CreateStream without a config",
            )
        })?;
        Ok(CreateStreamRequest {
            config: StreamConfig::decode_table(config)?,
        })
    }
}

/// The outcome of `CreateStream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedStream {
    /// `false` when a stream with this name and these settings existed.
    pub created: bool,
    pub stream: StreamMetadata,
}

impl CreatedStream {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let stream = self.stream.encode_into(&mut fbb);
        let root = fb::CreateStreamResponse::create(
            &mut fbb,
            &fb::CreateStreamResponseArgs {
                created: self.created,
                stream: Some(stream),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<CreatedStream, DecodeError> {
        let response = read_body::<fb::CreateStreamResponse>(body)?;
        let stream = response.stream().ok_or_else(|| {
            DecodeError::field(
                "CreateStreamResponse",
                "stream",
                "CreateStreamResponse without a stream",
            )
        })?;
        Ok(CreatedStream {
            created: response.created(),
            stream: StreamMetadata::decode_table(stream)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_stream_round_trips() {
        let request = CreateStreamRequest {
            config: StreamConfig::new("orders", "orders.>"),
        };
        assert_eq!(CreateStreamRequest::decode(&request.encode()), Ok(request));
        let created = CreatedStream {
            created: true,
            stream: StreamMetadata {
                error: None,
                config: StreamConfig::new("orders", "orders.>"),
                partitions: Vec::new(),
            },
        };
        assert_eq!(CreatedStream::decode(&created.encode()), Ok(created));
    }
}
