//! The message-index list of Confluent's Protobuf wire format: which message
//! of the schema file the body is, as a path (`[1]` is the file's second
//! top-level message, `[1, 0]` the first message nested in it). Zigzag
//! varints: the count, then each index; `[0]` (the first message, the
//! common case) is written as the single byte `0`, as Confluent's
//! serializers do.

/// The most indexes a list may hold (nesting depth); a longer count is
/// hostile or corrupt input.
pub const MAX_DEPTH: usize = 32;

/// Why bytes are not a message-index list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The bytes end inside the list.
    #[error("the message-index list is cut short")]
    Truncated,
    /// A varint is longer than 10 bytes or overflows.
    #[error("the message-index list holds a malformed varint")]
    Malformed,
    /// The count is negative or above [`MAX_DEPTH`].
    #[error("the message-index list claims {0} indexes (at most {MAX_DEPTH})")]
    BadCount(i64),
    /// An index is negative or does not fit an `i32`.
    #[error("the message-index list holds index {0}")]
    BadIndex(i64),
}

/// Writes `indexes` (empty is treated as `[0]`).
pub fn encode_indexes(indexes: &[i32], out: &mut Vec<u8>) {
    if indexes.is_empty() || indexes == [0] {
        out.push(0);
        return;
    }
    write_zigzag(indexes.len() as i64, out);
    for &i in indexes {
        write_zigzag(i64::from(i), out);
    }
}

/// Reads an index list from the front of `bytes`: the indexes and the rest (the body).
pub fn decode_indexes(bytes: &[u8]) -> Result<(Vec<i32>, &[u8]), IndexError> {
    let (count, mut rest) = read_zigzag(bytes)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if !(1..=MAX_DEPTH as i64).contains(&count) {
        return Err(IndexError::BadCount(count));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (i, r) = read_zigzag(rest)?;
        rest = r;
        out.push(
            i32::try_from(i)
                .ok()
                .filter(|i| *i >= 0)
                .ok_or(IndexError::BadIndex(i))?,
        );
    }
    Ok((out, rest))
}

fn write_zigzag(v: i64, out: &mut Vec<u8>) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

fn read_zigzag(bytes: &[u8]) -> Result<(i64, &[u8]), IndexError> {
    let mut u: u64 = 0;
    for (n, &b) in bytes.iter().enumerate() {
        if n >= 10 {
            return Err(IndexError::Malformed);
        }
        u |= u64::from(b & 0x7f) << (7 * n);
        if b < 0x80 {
            let v = ((u >> 1) as i64) ^ -((u & 1) as i64);
            return Ok((v, &bytes[n + 1..]));
        }
    }
    Err(IndexError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_as_confluents_serializers_write_them() {
        // Confluent's Python ProtobufSerializer: [0] -> 00, [1] -> 02 02,
        // [1, 0] -> 04 02 00, [64] -> 02 80 01.
        let enc = |i: &[i32]| {
            let mut v = Vec::new();
            encode_indexes(i, &mut v);
            v
        };
        assert_eq!(enc(&[0]), [0]);
        assert_eq!(enc(&[1]), [2, 2]);
        assert_eq!(enc(&[1, 0]), [4, 2, 0]);
        assert_eq!(enc(&[64]), [2, 0x80, 1]);
        assert_eq!(decode_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        assert_eq!(
            decode_indexes(&[4, 2, 0, 7]).unwrap(),
            (vec![1, 0], &[7u8][..])
        );
    }

    #[test]
    fn hostile_lists_are_errors() {
        assert_eq!(decode_indexes(&[]), Err(IndexError::Truncated));
        assert_eq!(decode_indexes(&[4, 2]), Err(IndexError::Truncated));
        assert_eq!(decode_indexes(&[0x80]), Err(IndexError::Truncated));
        assert_eq!(decode_indexes(&[1]), Err(IndexError::BadCount(-1)));
        assert_eq!(
            decode_indexes(&[0xfe, 0x0f]),
            Err(IndexError::BadCount(1023))
        );
        assert_eq!(decode_indexes(&[2, 1]), Err(IndexError::BadIndex(-1)));
        assert_eq!(decode_indexes(&[0xff; 11]), Err(IndexError::Malformed));
    }

    proptest! {
        #[test]
        fn lists_round_trip(list in proptest::collection::vec(0..i32::MAX, 1..MAX_DEPTH), body in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut v = Vec::new();
            encode_indexes(&list, &mut v);
            v.extend_from_slice(&body);
            let (got, rest) = decode_indexes(&v).unwrap();
            prop_assert_eq!(got, list);
            prop_assert_eq!(rest, &body[..]);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok((list, rest)) = decode_indexes(&bytes) {
                prop_assert!(!list.is_empty() && list.len() <= MAX_DEPTH);
                prop_assert!(rest.len() < bytes.len());
            }
        }
    }
}
