//! Test-only: invents request values for the oracle tests.
//!
//! [`Sampler`] has the reading methods of [`crate::reader::Reader`], but
//! each one makes up a value (from a seed, so proptest can drive and
//! shrink it). The generated `samples.rs` runs the decoders' bodies over it,
//! so a sample of a struct at a version sets exactly the fields that version
//! carries, with arbitrary (mostly non-default) values, nulls where the
//! field is nullable, arrays of 0 to 3 elements, and unknown tagged fields
//! in flexible versions.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::reader::{ArrayField, BytesField, ReadResult, StringField};

/// A request struct that can be sampled at a version.
pub(crate) trait Sample: Sized {
    /// A value of `Self` with every field of `version` set by `r`.
    fn sample(r: &mut Sampler, version: i16) -> ReadResult<Self>;
}

/// A small deterministic generator (splitmix64).
pub(crate) struct Sampler {
    state: u64,
}

impl Sampler {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Non-zero most of the time, sometimes an extreme.
    fn int(&mut self) -> i64 {
        match self.below(8) {
            0 => -1,
            1 => i64::MAX,
            2 => i64::MIN,
            _ => (self.next() as i64).wrapping_abs().max(1) % 100_000 + 1,
        }
    }

    pub(crate) fn boolean(&mut self) -> ReadResult<bool> {
        Ok(self.below(2) == 0)
    }

    pub(crate) fn int8<T: From<i8>>(&mut self) -> ReadResult<T> {
        Ok((self.int() as i8).into())
    }

    pub(crate) fn int16<T: From<i16>>(&mut self) -> ReadResult<T> {
        Ok((self.int() as i16).into())
    }

    #[allow(dead_code)]
    pub(crate) fn uint16<T: From<u16>>(&mut self) -> ReadResult<T> {
        Ok((self.int() as u16).into())
    }

    pub(crate) fn int32<T: From<i32>>(&mut self) -> ReadResult<T> {
        Ok((self.int() as i32).into())
    }

    #[allow(dead_code)]
    pub(crate) fn uint32<T: From<u32>>(&mut self) -> ReadResult<T> {
        Ok((self.int() as u32).into())
    }

    pub(crate) fn int64<T: From<i64>>(&mut self) -> ReadResult<T> {
        Ok(self.int().into())
    }

    #[allow(dead_code)]
    pub(crate) fn float64(&mut self) -> ReadResult<f64> {
        Ok(self.int() as f64 / 3.0)
    }

    pub(crate) fn uuid(&mut self) -> ReadResult<Uuid> {
        Ok(Uuid::from_u64_pair(self.next(), self.next()))
    }

    fn text(&mut self) -> StrBytes {
        // Multi-byte UTF-8 too: lengths on the wire are bytes, not chars.
        const ALPHABET: &[&str] = &["a", "Z", "9", ".", "_", "-", "é", "€", "🦀"];
        let len = self.below(8) as usize + 1;
        let s: String = (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect();
        StrBytes::from_string(s)
    }

    fn maybe_null<T, V>(
        &mut self,
        value: impl FnOnce(&mut Self) -> V,
        wrap: impl Fn(Option<V>) -> ReadResult<T>,
    ) -> ReadResult<T> {
        // Null one time in four where the field can hold it.
        if self.below(4) == 0 {
            if let Ok(null) = wrap(None) {
                return Ok(null);
            }
        }
        let v = value(self);
        wrap(Some(v))
    }

    pub(crate) fn string<T: StringField>(&mut self) -> ReadResult<T> {
        self.maybe_null(Self::text, T::from_wire)
    }

    pub(crate) fn compact_string<T: StringField>(&mut self) -> ReadResult<T> {
        self.string()
    }

    fn blob(&mut self) -> Bytes {
        let len = self.below(24) as usize;
        Bytes::from((0..len).map(|_| self.next() as u8).collect::<Vec<u8>>())
    }

    pub(crate) fn bytes<T: BytesField>(&mut self) -> ReadResult<T> {
        self.maybe_null(Self::blob, T::from_wire)
    }

    pub(crate) fn compact_bytes<T: BytesField>(&mut self) -> ReadResult<T> {
        self.bytes()
    }

    pub(crate) fn array<A, T>(
        &mut self,
        _element_min: usize,
        mut element: impl FnMut(&mut Sampler) -> ReadResult<T>,
    ) -> ReadResult<A>
    where
        A: ArrayField<T>,
    {
        self.maybe_null(
            |s| {
                let count = s.below(4);
                (0..count)
                    .map(|_| element(s))
                    .collect::<ReadResult<Vec<T>>>()
            },
            |v| match v {
                None => A::from_wire(None),
                Some(elements) => A::from_wire(Some(elements?)),
            },
        )
    }

    pub(crate) fn compact_array<A, T>(
        &mut self,
        element_min: usize,
        element: impl FnMut(&mut Sampler) -> ReadResult<T>,
    ) -> ReadResult<A>
    where
        A: ArrayField<T>,
    {
        self.array(element_min, element)
    }

    /// Offers tags 0 to 5 to `known`: a tag it sets stays set, a tag it
    /// does not define becomes an unknown tagged field half of the time, a
    /// tag invalid for the version is left out. Sometimes a high tag too.
    pub(crate) fn tagged_fields(
        &mut self,
        unknown: &mut BTreeMap<i32, Bytes>,
        mut known: impl FnMut(u32, &mut Sampler) -> ReadResult<bool>,
    ) -> ReadResult<()> {
        for tag in 0..6u32 {
            if self.below(2) == 0 {
                continue;
            }
            match known(tag, self) {
                Ok(true) | Err(_) => {}
                Ok(false) => {
                    let value = self.blob();
                    unknown.insert(tag as i32, value);
                }
            }
        }
        if self.below(4) == 0 {
            let value = self.blob();
            unknown.insert(1000, value);
        }
        Ok(())
    }

    pub(crate) fn unknown_tagged_fields(
        &mut self,
        unknown: &mut BTreeMap<i32, Bytes>,
    ) -> ReadResult<()> {
        self.tagged_fields(unknown, |_, _| Ok(false))
    }
}
