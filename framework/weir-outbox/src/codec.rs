//! The byte format of the `headers` column: version 1, then a count and each
//! header as length-prefixed key and value. Decoding untrusted bytes never
//! panics and never allocates more than the input's length.

use bytes::Bytes;
use weir::{Header, Headers};

const VERSION: u8 = 1;

/// The `headers` column could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("outbox headers column is corrupt: {0}")]
pub struct HeaderCodecError(pub &'static str);

/// Encodes headers for the `headers` column.
pub fn encode(h: &Headers) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + h.byte_size() + 6 * h.len());
    out.push(VERSION);
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    for Header { key, value } in h.iter() {
        let k = key.as_bytes();
        let klen = k.len().min(u16::MAX as usize);
        out.extend_from_slice(&(klen as u16).to_be_bytes());
        out.extend_from_slice(&k[..klen]);
        match value {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderCodecError> {
    if b.len() < n {
        return Err(HeaderCodecError("truncated"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// Decodes the `headers` column.
pub fn decode(mut b: &[u8]) -> Result<Headers, HeaderCodecError> {
    let v = take(&mut b, 1)?[0];
    if v != VERSION {
        return Err(HeaderCodecError("unknown version"));
    }
    let n = u32::from_be_bytes(take(&mut b, 4)?.try_into().expect("4 bytes")) as usize;
    // Each header takes at least 6 bytes: bound the allocation by the input.
    if n > b.len() / 6 {
        return Err(HeaderCodecError("count larger than the data"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let klen = u16::from_be_bytes(take(&mut b, 2)?.try_into().expect("2 bytes")) as usize;
        let key = std::str::from_utf8(take(&mut b, klen)?)
            .map_err(|_| HeaderCodecError("key is not UTF-8"))?
            .to_string();
        let vlen = i32::from_be_bytes(take(&mut b, 4)?.try_into().expect("4 bytes"));
        let value = match vlen {
            -1 => None,
            n if n < 0 => return Err(HeaderCodecError("negative value length")),
            n => Some(Bytes::copy_from_slice(take(&mut b, n as usize)?)),
        };
        out.push(Header { key, value });
    }
    if !b.is_empty() {
        return Err(HeaderCodecError("trailing bytes"));
    }
    Ok(Headers(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers() -> impl Strategy<Value = Headers> {
        proptest::collection::vec(
            (
                "[a-z-]{0,20}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            ),
            0..12,
        )
        .prop_map(|v| {
            Headers(
                v.into_iter()
                    .map(|(key, value)| Header {
                        key,
                        value: value.map(Bytes::from),
                    })
                    .collect(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
        ))]

        #[test]
        fn round_trips(h in headers()) {
            prop_assert_eq!(decode(&encode(&h)).unwrap(), h);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&b);
        }

        #[test]
        fn truncations_are_errors(h in headers(), cut in 0usize..64) {
            let e = encode(&h);
            if cut > 0 && cut <= e.len() {
                prop_assert!(decode(&e[..e.len() - cut]).is_err());
            }
        }
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut b = vec![VERSION];
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode(&b),
            Err(HeaderCodecError("count larger than the data"))
        );
    }
}
