//! A checked reader over one request's bytes.
//!
//! Every length, count and size on the wire is untrusted: before anything
//! is allocated it is checked against the bytes that remain and, for
//! element counts and tagged fields, against a named limit. Nothing here
//! panics; every failure is a [`ReadError`]. Strings and byte fields are
//! zero-copy slices of the request frame ([`Bytes::slice`]).
//!
//! The typed entry points (`string`, `bytes`, `array`, ...) are generic
//! over the field they fill (`StrBytes` or `Option<TopicName>`, `Vec<T>`
//! or `Option<Vec<T>>`), so the decoders in [`crate::decode`] read like the
//! Kafka schemas: null is accepted exactly where the field type can hold it.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{GroupId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

/// Most elements one array in a request may declare.
///
/// Checked before the vector is allocated, on top of the count fitting in
/// the bytes that remain: a request struct is larger in memory than on the
/// wire (a one-byte flexible struct becomes a ~100-byte Rust value), so the
/// byte bound alone would let a frame of a few MiB allocate hundreds. The
/// largest real requests (a Fetch or Produce naming every partition a
/// broker leads, a Metadata or ListOffsets over a large cluster) stay in the
/// tens of thousands.
pub const ARRAY_ELEMENTS_MAX: usize = 100_000;

/// Most tagged fields one struct may carry.
///
/// Kafka defines at most a handful of tags per struct; unknown ones are kept
/// (as the `kafka-protocol` decoders keep them, in `unknown_tagged_fields`),
/// so this bounds the map a hostile request can make us build.
pub const TAGGED_FIELDS_MAX: usize = 64;

/// Longest string, in bytes, of any encoding.
///
/// Classic strings carry an `i16` length, so this is their natural bound;
/// Kafka's own parser applies the same bound to compact strings
/// (`Short.MAX_VALUE`), and so do we.
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;

/// Longest unsigned varint for a 32-bit value: 5 bytes of 7 bits.
pub const UVARINT_BYTES_MAX: usize = 5;

/// Longest unsigned varint for a 64-bit value: 10 bytes of 7 bits.
pub const UVARLONG_BYTES_MAX: usize = 10;

/// Why bytes could not be read as the field they should hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The field needs more bytes than remain.
    #[error("needs {needed} bytes, {remaining} remain")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the request.
        remaining: usize,
    },
    /// A length or count below -1 (only -1 means null).
    #[error("length {0} is negative")]
    NegativeLength(i64),
    /// A null where the schema has a non-nullable field.
    #[error("null in a non-nullable field")]
    UnexpectedNull,
    /// A varint longer than its type allows, or with bits past its width.
    #[error("varint is too long for its type")]
    VarintOverflow,
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string longer than [`STRING_BYTES_MAX`].
    #[error("string of {len} bytes exceeds the limit of {limit}")]
    StringTooLong {
        /// Declared length.
        len: usize,
        /// The limit ([`STRING_BYTES_MAX`]).
        limit: usize,
    },
    /// An array count above [`ARRAY_ELEMENTS_MAX`].
    #[error("array of {count} elements exceeds the limit of {limit}")]
    TooManyElements {
        /// Declared count.
        count: usize,
        /// The limit ([`ARRAY_ELEMENTS_MAX`]).
        limit: usize,
    },
    /// An array count that cannot fit in the bytes that remain.
    #[error(
        "array of {count} elements of at least {element_min} bytes cannot fit in {remaining} bytes"
    )]
    ElementsExceedBytes {
        /// Declared count.
        count: usize,
        /// Smallest encoding of one element.
        element_min: usize,
        /// Bytes left in the request.
        remaining: usize,
    },
    /// More tagged fields than [`TAGGED_FIELDS_MAX`], or than could fit.
    #[error("{count} tagged fields exceed the limit of {limit} or the bytes that remain")]
    TooManyTaggedFields {
        /// Declared count.
        count: usize,
        /// The limit ([`TAGGED_FIELDS_MAX`]).
        limit: usize,
    },
    /// Tags must be strictly ascending (the protocol's rule; Kafka refuses
    /// the same), which also rules out duplicates.
    #[error("tag {tag} follows tag {previous}")]
    TagOutOfOrder {
        /// The tag read.
        tag: u32,
        /// The tag before it.
        previous: u32,
    },
    /// A tag that does not fit the `i32` keys of `unknown_tagged_fields`.
    #[error("tag {0} is out of range")]
    TagOutOfRange(u32),
    /// A known tag sent in a version that does not define it.
    #[error("tag {tag} is not valid for version {version}")]
    TagNotValid {
        /// The tag read.
        tag: u32,
        /// The version being decoded.
        version: i16,
    },
    /// A known tagged field whose value did not fill its declared size.
    #[error("tagged field {tag} declares {size} bytes but its value used {used}")]
    TaggedFieldSize {
        /// The tag read.
        tag: u32,
        /// Declared size.
        size: usize,
        /// Bytes its value used.
        used: usize,
    },
    /// A struct asked for at a version its schema does not have.
    #[error("version {0} is not supported by this message type")]
    UnsupportedVersion(i16),
    /// Bytes left after the request body.
    #[error("{0} bytes follow the request body")]
    TrailingBytes(usize),
}

/// A result of reading.
pub type ReadResult<T> = Result<T, ReadError>;

/// A cursor over one request's bytes; reads consume from the front.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    // Offset just past this reader's bytes in the whole frame, so that
    // positions can be reported relative to the frame (tests use them).
    end: usize,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self {
            end: buf.len(),
            buf,
        }
    }

    /// Offset of the next byte to read, from the start of the frame.
    pub fn offset(&self) -> usize {
        self.end - self.buf.len()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless every byte has been read (a request body must end where
    /// its frame ends).
    pub fn finish(&self) -> ReadResult<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ReadError::TrailingBytes(n)),
        }
    }

    /// The next `n` bytes, zero-copy.
    pub fn take(&mut self, n: usize) -> ReadResult<Bytes> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything not read yet, zero-copy.
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    fn need(&self, n: usize) -> ReadResult<()> {
        if n > self.buf.len() {
            return Err(ReadError::Truncated {
                needed: n,
                remaining: self.buf.len(),
            });
        }
        Ok(())
    }

    /// A boolean: any non-zero byte is true (as Kafka reads it).
    pub fn boolean(&mut self) -> ReadResult<bool> {
        Ok(self.u8()? != 0)
    }

    /// An unsigned byte.
    pub fn u8(&mut self) -> ReadResult<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// A signed byte.
    pub fn int8<T: From<i8>>(&mut self) -> ReadResult<T> {
        self.need(1)?;
        Ok(self.buf.get_i8().into())
    }

    /// A big-endian `i16`.
    pub fn int16<T: From<i16>>(&mut self) -> ReadResult<T> {
        self.need(2)?;
        Ok(self.buf.get_i16().into())
    }

    /// A big-endian `u16`.
    pub fn uint16<T: From<u16>>(&mut self) -> ReadResult<T> {
        self.need(2)?;
        Ok(self.buf.get_u16().into())
    }

    /// A big-endian `i32`.
    pub fn int32<T: From<i32>>(&mut self) -> ReadResult<T> {
        self.need(4)?;
        Ok(self.buf.get_i32().into())
    }

    /// A big-endian `u32`.
    pub fn uint32<T: From<u32>>(&mut self) -> ReadResult<T> {
        self.need(4)?;
        Ok(self.buf.get_u32().into())
    }

    /// A big-endian `i64`.
    pub fn int64<T: From<i64>>(&mut self) -> ReadResult<T> {
        self.need(8)?;
        Ok(self.buf.get_i64().into())
    }

    /// A big-endian IEEE 754 double.
    pub fn float64(&mut self) -> ReadResult<f64> {
        self.need(8)?;
        Ok(self.buf.get_f64())
    }

    /// A 16-byte UUID.
    pub fn uuid(&mut self) -> ReadResult<Uuid> {
        self.need(16)?;
        let mut raw = [0u8; 16];
        self.buf.copy_to_slice(&mut raw);
        Ok(Uuid::from_bytes(raw))
    }

    /// An unsigned varint of at most [`UVARINT_BYTES_MAX`] bytes whose value
    /// fits in 32 bits (longer or wider encodings are refused, not wrapped).
    pub fn uvarint(&mut self) -> ReadResult<u32> {
        let value = self.uvar(UVARINT_BYTES_MAX)?;
        u32::try_from(value).map_err(|_| ReadError::VarintOverflow)
    }

    /// A zigzag-encoded signed varint (32 bits).
    pub fn varint(&mut self) -> ReadResult<i32> {
        let zigzag = self.uvarint()?;
        Ok(((zigzag >> 1) as i32) ^ -((zigzag & 1) as i32))
    }

    /// An unsigned varint of at most [`UVARLONG_BYTES_MAX`] bytes (64 bits).
    pub fn uvarlong(&mut self) -> ReadResult<u64> {
        self.uvar(UVARLONG_BYTES_MAX)
    }

    /// A zigzag-encoded signed varint (64 bits).
    pub fn varlong(&mut self) -> ReadResult<i64> {
        let zigzag = self.uvarlong()?;
        Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
    }

    /// A length or count as an unsigned varint, its position traced.
    fn uvarint_traced(&mut self) -> ReadResult<u32> {
        let start = self.offset();
        let value = self.uvarint()?;
        self.trace(start, trace::Width::UVarint);
        Ok(value)
    }

    /// Notes (in tests) where a length or count prefix was, so the hostile
    /// input tests can find every one of them in a valid request.
    #[cfg_attr(not(test), allow(unused_variables))]
    fn trace(&self, start: usize, width: trace::Width) {
        #[cfg(test)]
        trace::note(trace::Prefix {
            start,
            end: self.offset(),
            width,
        });
    }

    fn uvar(&mut self, max_bytes: usize) -> ReadResult<u64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The last byte may only carry the bits that are left of 64.
            if shift > 0 && bits.checked_shl(shift).map(|v| v >> shift) != Some(bits) {
                return Err(ReadError::VarintOverflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ReadError::VarintOverflow)
    }

    /// A classic string (`i16` length, -1 for null) into `T`.
    pub fn string<T: StringField>(&mut self) -> ReadResult<T> {
        let start = self.offset();
        let len = self.int16::<i16>()?;
        self.trace(start, trace::Width::I16);
        let raw = match len {
            -1 => None,
            n if n < -1 => return Err(ReadError::NegativeLength(n.into())),
            n => Some(self.str_bytes(n as usize)?),
        };
        T::from_wire(raw)
    }

    /// A compact string (unsigned varint length + 1, 0 for null) into `T`.
    pub fn compact_string<T: StringField>(&mut self) -> ReadResult<T> {
        let raw = match self.uvarint_traced()? {
            0 => None,
            n => Some(self.str_bytes(n as usize - 1)?),
        };
        T::from_wire(raw)
    }

    fn str_bytes(&mut self, len: usize) -> ReadResult<StrBytes> {
        if len > STRING_BYTES_MAX {
            return Err(ReadError::StringTooLong {
                len,
                limit: STRING_BYTES_MAX,
            });
        }
        StrBytes::from_utf8(self.take(len)?).map_err(|_| ReadError::InvalidUtf8)
    }

    /// Classic bytes (`i32` length, -1 for null) into `T`, zero-copy.
    pub fn bytes<T: BytesField>(&mut self) -> ReadResult<T> {
        let start = self.offset();
        let len = self.int32::<i32>()?;
        self.trace(start, trace::Width::I32);
        let raw = match len {
            -1 => None,
            n if n < -1 => return Err(ReadError::NegativeLength(n.into())),
            n => Some(self.take(n as usize)?),
        };
        T::from_wire(raw)
    }

    /// Compact bytes (unsigned varint length + 1, 0 for null) into `T`,
    /// zero-copy.
    pub fn compact_bytes<T: BytesField>(&mut self) -> ReadResult<T> {
        let raw = match self.uvarint_traced()? {
            0 => None,
            n => Some(self.take(n as usize - 1)?),
        };
        T::from_wire(raw)
    }

    /// A classic array (`i32` count, -1 for null) into `A`; each element
    /// takes at least `element_min` bytes and is read by `element`.
    pub fn array<A, T>(
        &mut self,
        element_min: usize,
        element: impl FnMut(&mut Reader) -> ReadResult<T>,
    ) -> ReadResult<A>
    where
        A: ArrayField<T>,
    {
        let start = self.offset();
        let count = self.int32::<i32>()?;
        self.trace(start, trace::Width::I32);
        let count = match count {
            -1 => None,
            n if n < -1 => return Err(ReadError::NegativeLength(n.into())),
            n => Some(n as usize),
        };
        A::from_wire(self.elements(count, element_min, element)?)
    }

    /// A compact array (unsigned varint count + 1, 0 for null) into `A`.
    pub fn compact_array<A, T>(
        &mut self,
        element_min: usize,
        element: impl FnMut(&mut Reader) -> ReadResult<T>,
    ) -> ReadResult<A>
    where
        A: ArrayField<T>,
    {
        let count = match self.uvarint_traced()? {
            0 => None,
            n => Some(n as usize - 1),
        };
        A::from_wire(self.elements(count, element_min, element)?)
    }

    fn elements<T>(
        &mut self,
        count: Option<usize>,
        element_min: usize,
        mut element: impl FnMut(&mut Reader) -> ReadResult<T>,
    ) -> ReadResult<Option<Vec<T>>> {
        let Some(count) = count else {
            return Ok(None);
        };
        // Both checks come before the allocation they guard.
        if count > ARRAY_ELEMENTS_MAX {
            return Err(ReadError::TooManyElements {
                count,
                limit: ARRAY_ELEMENTS_MAX,
            });
        }
        let element_min = element_min.max(1);
        if count.saturating_mul(element_min) > self.remaining() {
            return Err(ReadError::ElementsExceedBytes {
                count,
                element_min,
                remaining: self.remaining(),
            });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    /// The tagged-field section of a flexible struct.
    ///
    /// `known` is called with each tag and a reader over exactly that field's
    /// bytes; it decodes the tags its struct defines and returns `false` for
    /// the others, which are kept in `unknown` (keyed as the crate keys
    /// them). A known field must use exactly its declared size.
    pub fn tagged_fields(
        &mut self,
        unknown: &mut BTreeMap<i32, Bytes>,
        mut known: impl FnMut(u32, &mut Reader) -> ReadResult<bool>,
    ) -> ReadResult<()> {
        let count = self.uvarint_traced()? as usize;
        // A field takes at least two bytes: its tag and its size.
        if count > TAGGED_FIELDS_MAX || count.saturating_mul(2) > self.remaining() {
            return Err(ReadError::TooManyTaggedFields {
                count,
                limit: TAGGED_FIELDS_MAX,
            });
        }
        let mut previous: Option<u32> = None;
        for _ in 0..count {
            let tag = self.uvarint()?;
            let key = i32::try_from(tag).map_err(|_| ReadError::TagOutOfRange(tag))?;
            if let Some(previous) = previous.filter(|&p| tag <= p) {
                return Err(ReadError::TagOutOfOrder { tag, previous });
            }
            previous = Some(tag);
            let size = self.uvarint_traced()? as usize;
            let bytes = self.take(size)?;
            let mut field = Reader {
                buf: bytes,
                end: self.offset(),
            };
            if known(tag, &mut field)? {
                if !field.is_empty() {
                    return Err(ReadError::TaggedFieldSize {
                        tag,
                        size,
                        used: size - field.remaining(),
                    });
                }
            } else {
                unknown.insert(key, field.take_rest());
            }
        }
        Ok(())
    }

    /// The tagged-field section of a struct that defines no tags: every tag
    /// is kept in `unknown`.
    pub fn unknown_tagged_fields(&mut self, unknown: &mut BTreeMap<i32, Bytes>) -> ReadResult<()> {
        self.tagged_fields(unknown, |_, _| Ok(false))
    }
}

/// A field a string is read into: a string type, or an `Option` of one
/// where the schema allows null.
pub trait StringField: Sized {
    /// The field from the wire value (`None` for null).
    fn from_wire(raw: Option<StrBytes>) -> ReadResult<Self>;
}

/// A field bytes are read into: `Bytes` or `Option<Bytes>`.
pub trait BytesField: Sized {
    /// The field from the wire value (`None` for null).
    fn from_wire(raw: Option<Bytes>) -> ReadResult<Self>;
}

/// A field an array is read into: `Vec<T>` or `Option<Vec<T>>`.
pub trait ArrayField<T>: Sized {
    /// The field from the wire value (`None` for null).
    fn from_wire(raw: Option<Vec<T>>) -> ReadResult<Self>;
}

// One impl per concrete string type (not a blanket over `From<StrBytes>`:
// that would overlap with the `Option` impls under coherence rules).
macro_rules! string_fields {
    ($($t:ty),*) => {$(
        impl StringField for $t {
            fn from_wire(raw: Option<StrBytes>) -> ReadResult<Self> {
                raw.map(<$t>::from).ok_or(ReadError::UnexpectedNull)
            }
        }
        impl StringField for Option<$t> {
            fn from_wire(raw: Option<StrBytes>) -> ReadResult<Self> {
                Ok(raw.map(<$t>::from))
            }
        }
    )*};
}
string_fields!(StrBytes, TopicName, GroupId, TransactionalId);

impl BytesField for Bytes {
    fn from_wire(raw: Option<Bytes>) -> ReadResult<Self> {
        raw.ok_or(ReadError::UnexpectedNull)
    }
}

impl BytesField for Option<Bytes> {
    fn from_wire(raw: Option<Bytes>) -> ReadResult<Self> {
        Ok(raw)
    }
}

impl<T> ArrayField<T> for Vec<T> {
    fn from_wire(raw: Option<Vec<T>>) -> ReadResult<Self> {
        raw.ok_or(ReadError::UnexpectedNull)
    }
}

impl<T> ArrayField<T> for Option<Vec<T>> {
    fn from_wire(raw: Option<Vec<T>>) -> ReadResult<Self> {
        Ok(raw)
    }
}

/// Where the reader met length and count prefixes (recorded in tests only).
pub(crate) mod trace {
    /// How a prefix is encoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Width {
        /// Classic string length.
        I16,
        /// Classic bytes length or array count.
        I32,
        /// Compact length or count, tagged-field count or size.
        UVarint,
    }

    /// One prefix: its bytes in the frame and its encoding.
    #[cfg(test)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Prefix {
        pub(crate) start: usize,
        pub(crate) end: usize,
        pub(crate) width: Width,
    }

    #[cfg(test)]
    thread_local! {
        static PREFIXES: std::cell::RefCell<Option<Vec<Prefix>>> = const { std::cell::RefCell::new(None) };
    }

    #[cfg(test)]
    pub(super) fn note(prefix: Prefix) {
        PREFIXES.with(|p| {
            if let Some(p) = p.borrow_mut().as_mut() {
                p.push(prefix);
            }
        });
    }

    /// Runs `f`, returning what it returned and the prefixes read meanwhile.
    #[cfg(test)]
    pub(crate) fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<Prefix>) {
        PREFIXES.with(|p| *p.borrow_mut() = Some(Vec::new()));
        let out = f();
        let prefixes = PREFIXES.with(|p| p.borrow_mut().take()).unwrap_or_default();
        (out, prefixes)
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
