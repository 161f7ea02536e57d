use super::*;

fn reader(bytes: &[u8]) -> Reader {
    Reader::new(Bytes::copy_from_slice(bytes))
}

#[test]
fn fixed_width_integers_are_big_endian_and_checked() {
    let mut r = reader(&[0x01, 0x02, 0x03, 0x04, 0xff]);
    assert_eq!(r.int16::<i16>(), Ok(0x0102));
    assert_eq!(r.int8::<i8>(), Ok(3));
    assert_eq!(r.offset(), 3);
    assert_eq!(
        r.int32::<i32>(),
        Err(ReadError::Truncated {
            needed: 4,
            remaining: 2
        })
    );
    // A failed read consumes nothing.
    assert_eq!(r.remaining(), 2);
    assert_eq!(r.boolean(), Ok(true));
    assert_eq!(r.boolean(), Ok(true));
    assert!(r.is_empty());
    assert_eq!(r.finish(), Ok(()));
    assert_eq!(reader(&[0]).finish(), Err(ReadError::TrailingBytes(1)));
}

#[test]
fn varints_match_kafkas_encoding() {
    // The vectors of the kafka-protocol crate's own tests.
    let cases: &[(i32, &[u8])] = &[
        (0, &[0]),
        (-1, &[1]),
        (1, &[2]),
        (-2, &[3]),
        (300, &[216, 4]),
        (i32::MAX, &[254, 255, 255, 255, 15]),
        (i32::MIN, &[255, 255, 255, 255, 15]),
    ];
    for &(value, bytes) in cases {
        let mut r = reader(bytes);
        assert_eq!(r.varint(), Ok(value), "{bytes:?}");
        assert!(r.is_empty());
    }
    let long: &[(i64, &[u8])] = &[
        (i64::MAX, &[254, 255, 255, 255, 255, 255, 255, 255, 255, 1]),
        (i64::MIN, &[255, 255, 255, 255, 255, 255, 255, 255, 255, 1]),
        (-2, &[3]),
    ];
    for &(value, bytes) in long {
        assert_eq!(reader(bytes).varlong(), Ok(value), "{bytes:?}");
    }
    assert_eq!(
        reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).uvarint(),
        Ok(u32::MAX)
    );
}

#[test]
fn varints_are_bounded() {
    // Bits past 32, a sixth byte, a missing last byte.
    assert_eq!(
        reader(&[0xff, 0xff, 0xff, 0xff, 0x10]).uvarint(),
        Err(ReadError::VarintOverflow)
    );
    assert_eq!(
        reader(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).uvarint(),
        Err(ReadError::VarintOverflow)
    );
    assert!(matches!(
        reader(&[0x80]).uvarint(),
        Err(ReadError::Truncated { .. })
    ));
    assert_eq!(
        reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).uvarlong(),
        Err(ReadError::VarintOverflow)
    );
    assert_eq!(
        reader(&[0xff; 11]).uvarlong(),
        Err(ReadError::VarintOverflow)
    );
}

#[test]
fn uuids_are_sixteen_bytes() {
    let raw: Vec<u8> = (1..=16).collect();
    assert_eq!(
        reader(&raw).uuid().map(|u| u.into_bytes().to_vec()),
        Ok(raw.clone())
    );
    assert!(matches!(
        reader(&raw[..15]).uuid(),
        Err(ReadError::Truncated { .. })
    ));
}

#[test]
fn classic_strings() {
    assert_eq!(
        reader(b"\x00\x02hi").string::<StrBytes>(),
        Ok(StrBytes::from_static_str("hi"))
    );
    assert_eq!(reader(b"\xff\xff").string::<Option<StrBytes>>(), Ok(None));
    assert_eq!(
        reader(b"\xff\xff").string::<StrBytes>(),
        Err(ReadError::UnexpectedNull)
    );
    assert_eq!(
        reader(b"\xff\xfe").string::<StrBytes>(),
        Err(ReadError::NegativeLength(-2))
    );
    assert_eq!(
        reader(b"\x7f\xffab").string::<StrBytes>(),
        Err(ReadError::Truncated {
            needed: 32767,
            remaining: 2
        })
    );
    assert_eq!(
        reader(b"\x00\x02\xc3\x28").string::<StrBytes>(),
        Err(ReadError::InvalidUtf8)
    );
    assert_eq!(
        reader(b"\x00\x06orders").string::<TopicName>(),
        Ok(TopicName(StrBytes::from_static_str("orders")))
    );
}

#[test]
fn compact_strings() {
    assert_eq!(
        reader(b"\x03hi").compact_string::<StrBytes>(),
        Ok(StrBytes::from_static_str("hi"))
    );
    assert_eq!(
        reader(b"\x00").compact_string::<Option<GroupId>>(),
        Ok(None)
    );
    assert_eq!(
        reader(b"\x00").compact_string::<GroupId>(),
        Err(ReadError::UnexpectedNull)
    );
    assert_eq!(
        reader(b"\x01").compact_string::<StrBytes>(),
        Ok(StrBytes::new())
    );
    // Longer than Kafka allows, whatever remains.
    let mut long = vec![0x81, 0x80, 0x02]; // 32768 + 1
    long.resize(long.len() + 40_000, b'a');
    assert_eq!(
        reader(&long).compact_string::<StrBytes>(),
        Err(ReadError::StringTooLong {
            len: 32768,
            limit: STRING_BYTES_MAX
        })
    );
    assert!(matches!(
        reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).compact_string::<StrBytes>(),
        Err(ReadError::StringTooLong { .. })
    ));
}

#[test]
fn bytes_are_zero_copy_slices() {
    let frame = Bytes::from_static(b"\x00\x00\x00\x03abc\x04xyz");
    let mut r = Reader::new(frame.clone());
    let classic: Bytes = r.bytes().unwrap();
    let compact: Bytes = r.compact_bytes().unwrap();
    assert_eq!((&classic[..], &compact[..]), (&b"abc"[..], &b"xyz"[..]));
    assert_eq!(classic.as_ptr(), frame[4..].as_ptr());
    assert_eq!(compact.as_ptr(), frame[8..].as_ptr());
    assert_eq!(
        reader(b"\xff\xff\xff\xff").bytes::<Option<Bytes>>(),
        Ok(None)
    );
    assert_eq!(
        reader(b"\xff\xff\xff\xff").bytes::<Bytes>(),
        Err(ReadError::UnexpectedNull)
    );
    assert_eq!(
        reader(b"\x80\x00\x00\x00").bytes::<Bytes>(),
        Err(ReadError::NegativeLength(i32::MIN.into()))
    );
    assert!(matches!(
        reader(b"\x7f\xff\xff\xff").bytes::<Bytes>(),
        Err(ReadError::Truncated { .. })
    ));
    assert_eq!(reader(b"\x00").compact_bytes::<Option<Bytes>>(), Ok(None));
    assert!(matches!(
        reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).compact_bytes::<Bytes>(),
        Err(ReadError::Truncated { .. })
    ));
}

#[test]
fn array_counts_are_checked_before_allocating() {
    let ints = |r: &mut Reader| r.int32::<i32>();
    assert_eq!(
        reader(b"\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02").array(4, ints),
        Ok(vec![1, 2])
    );
    assert_eq!(
        reader(b"\xff\xff\xff\xff").array::<Option<Vec<i32>>, _>(4, ints),
        Ok(None)
    );
    assert_eq!(
        reader(b"\xff\xff\xff\xff").array::<Vec<i32>, _>(4, ints),
        Err(ReadError::UnexpectedNull)
    );
    assert_eq!(
        reader(b"\xff\xff\xff\xfe").array::<Vec<i32>, _>(4, ints),
        Err(ReadError::NegativeLength(-2))
    );
    // Two ints need 8 bytes; 7 remain.
    assert_eq!(
        reader(b"\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00").array::<Vec<i32>, _>(4, ints),
        Err(ReadError::ElementsExceedBytes {
            count: 2,
            element_min: 4,
            remaining: 7
        })
    );
    assert_eq!(
        reader(b"\x7f\xff\xff\xff").array::<Vec<i32>, _>(4, ints),
        Err(ReadError::TooManyElements {
            count: i32::MAX as usize,
            limit: ARRAY_ELEMENTS_MAX
        })
    );
    assert_eq!(
        reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).compact_array::<Vec<i32>, _>(4, ints),
        Err(ReadError::TooManyElements {
            count: u32::MAX as usize - 1,
            limit: ARRAY_ELEMENTS_MAX
        })
    );
    assert_eq!(
        reader(b"\x00").compact_array::<Option<Vec<i32>>, _>(4, ints),
        Ok(None)
    );
    assert_eq!(
        reader(b"\x01").compact_array::<Vec<i32>, _>(4, ints),
        Ok(vec![])
    );
    // A zero element size still counts as one byte per element.
    assert!(matches!(
        reader(b"\x00\x00\x00\x05").array::<Vec<()>, _>(0, |_| Ok(())),
        Err(ReadError::ElementsExceedBytes { element_min: 1, .. })
    ));
}

#[test]
fn unknown_tagged_fields_are_kept_zero_copy() {
    let frame = Bytes::from_static(b"\x02\x01\x02ab\x05\x00\x01");
    let mut r = Reader::new(frame.clone());
    let mut unknown = BTreeMap::new();
    r.unknown_tagged_fields(&mut unknown).unwrap();
    assert_eq!(r.remaining(), 1);
    assert_eq!(unknown.len(), 2);
    assert_eq!(&unknown[&1][..], b"ab");
    assert_eq!(unknown[&1].as_ptr(), frame[3..].as_ptr());
    assert_eq!(&unknown[&5][..], b"");
}

#[test]
fn known_tagged_fields_use_exactly_their_size() {
    let mut unknown = BTreeMap::new();
    let value = std::cell::Cell::new(0i32);
    let mut known = |tag: u32, r: &mut Reader| -> ReadResult<bool> {
        if tag == 0 {
            value.set(r.int32()?);
            return Ok(true);
        }
        Ok(false)
    };
    reader(b"\x01\x00\x04\x00\x00\x00\x07")
        .tagged_fields(&mut unknown, &mut known)
        .unwrap();
    assert_eq!(value.get(), 7);
    assert!(unknown.is_empty());
    assert_eq!(
        reader(b"\x01\x00\x05\x00\x00\x00\x07\x00").tagged_fields(&mut unknown, &mut known),
        Err(ReadError::TaggedFieldSize {
            tag: 0,
            size: 5,
            used: 4
        })
    );
    // A value that needs more than its declared size is truncated there.
    assert!(matches!(
        reader(b"\x01\x00\x02\x00\x00\x00\x07").tagged_fields(&mut unknown, &mut known),
        Err(ReadError::Truncated { .. })
    ));
}

#[test]
fn tagged_fields_are_bounded_and_ordered() {
    let mut unknown = BTreeMap::new();
    assert_eq!(
        reader(b"\x02\x03\x00\x01\x00").unknown_tagged_fields(&mut unknown),
        Err(ReadError::TagOutOfOrder {
            tag: 1,
            previous: 3
        })
    );
    assert_eq!(
        reader(b"\x02\x03\x00\x03\x00").unknown_tagged_fields(&mut unknown),
        Err(ReadError::TagOutOfOrder {
            tag: 3,
            previous: 3
        })
    );
    assert_eq!(
        reader(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]).unknown_tagged_fields(&mut unknown),
        Err(ReadError::TagOutOfRange(u32::MAX))
    );
    let many = TAGGED_FIELDS_MAX + 1;
    let mut bytes = vec![many as u8];
    for tag in 0..many {
        bytes.extend_from_slice(&[tag as u8, 0]);
    }
    assert!(matches!(
        reader(&bytes).unknown_tagged_fields(&mut unknown),
        Err(ReadError::TooManyTaggedFields { .. })
    ));
    // More fields than two bytes each could hold.
    assert!(matches!(
        reader(b"\x03\x00\x00").unknown_tagged_fields(&mut unknown),
        Err(ReadError::TooManyTaggedFields { count: 3, .. })
    ));
    assert!(matches!(
        reader(b"\x01\x00\x7f").unknown_tagged_fields(&mut unknown),
        Err(ReadError::Truncated { .. })
    ));
}
