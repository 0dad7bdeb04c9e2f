//! A hostile producer: writes record batches byte by byte over the Kafka
//! protocol (Produce v3, record batch v2), so tests can send what no
//! well-behaved client library lets you build: header names that are not
//! UTF-8 or hold NUL bytes, and so on. Every byte from the broker is hostile
//! to Weir; this is how tests make such bytes.
//!
//! It sends to one broker address, which must lead the partition (the mock
//! cluster with one broker, a one-node Kafka).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TestkitError;

/// A record whose every byte is chosen by the test.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers: raw name bytes and value.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn varbytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// CRC-32C (Castagnoli), bitwise: test data is small.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One uncompressed record batch (magic 2) of `records`.
pub fn record_batch(records: &[RawRecord]) -> Vec<u8> {
    let base_ts = records.first().map(|r| r.timestamp_ms).unwrap_or(0);
    let max_ts = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_ts);
    let mut body = Vec::new(); // from attributes to the end: covered by the CRC
    body.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression
    body.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // last offset delta
    body.extend_from_slice(&base_ts.to_be_bytes());
    body.extend_from_slice(&max_ts.to_be_bytes());
    body.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    body.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    body.extend_from_slice(&(records.len() as i32).to_be_bytes());
    for (i, r) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        varint(&mut rec, r.timestamp_ms - base_ts);
        varint(&mut rec, i as i64);
        varbytes(&mut rec, r.key.as_deref());
        varbytes(&mut rec, r.value.as_deref());
        varint(&mut rec, r.headers.len() as i64);
        for (name, value) in &r.headers {
            varbytes(&mut rec, Some(name));
            varbytes(&mut rec, value.as_deref());
        }
        varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut batch = Vec::with_capacity(body.len() + 21);
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((body.len() + 9) as i32).to_be_bytes()); // length after this field
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&body).to_be_bytes());
    batch.extend_from_slice(&body);
    batch
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Produces `records` to `topic`/`partition` on the broker at `addr`
/// (`host:port`) with `acks=-1`, and returns the base offset.
pub async fn produce_raw(
    addr: &str,
    topic: &str,
    partition: i32,
    records: &[RawRecord],
) -> Result<i64, TestkitError> {
    let batch = record_batch(records);
    let mut req = Vec::new();
    req.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
    req.extend_from_slice(&3i16.to_be_bytes()); // version 3
    req.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    string(&mut req, "weir-testkit-raw");
    req.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    req.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
    req.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    req.extend_from_slice(&1i32.to_be_bytes()); // one topic
    string(&mut req, topic);
    req.extend_from_slice(&1i32.to_be_bytes()); // one partition
    req.extend_from_slice(&partition.to_be_bytes());
    req.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    req.extend_from_slice(&batch);

    let io = |what: &'static str| {
        move |e: std::io::Error| TestkitError::Io {
            context: format!("raw produce to {topic}/{partition}: {what}"),
            source: e,
        }
    };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(io("connecting"))?;
        s.write_all(&(req.len() as i32).to_be_bytes())
            .await
            .map_err(io("sending"))?;
        s.write_all(&req).await.map_err(io("sending"))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .await
            .map_err(io("reading the answer"))?;
        let mut resp = vec![0u8; i32::from_be_bytes(len).clamp(0, 1 << 20) as usize];
        s.read_exact(&mut resp)
            .await
            .map_err(io("reading the answer"))?;
        Ok::<_, TestkitError>(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| TestkitError::Timeout {
            what: format!("the answer to a raw produce to {topic}/{partition}"),
            secs: 20,
        })??;
    parse_produce_response(&resp, topic)
}

/// Correlation id, topics (name, partitions (index, error, base offset, log append time)), throttle.
fn parse_produce_response(resp: &[u8], topic: &str) -> Result<i64, TestkitError> {
    let bad = || TestkitError::Other(format!("malformed Produce answer for {topic}: {resp:02x?}"));
    let mut at = 4usize; // correlation id
    let mut take = |n: usize| -> Result<&[u8], TestkitError> {
        let s = resp.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let _topics = take(4)?;
    let name_len = i16::from_be_bytes(take(2)?.try_into().map_err(|_| bad())?);
    take(name_len.max(0) as usize)?;
    let _parts = take(4)?;
    let _index = take(4)?;
    let error = i16::from_be_bytes(take(2)?.try_into().map_err(|_| bad())?);
    let base = i64::from_be_bytes(take(8)?.try_into().map_err(|_| bad())?);
    if error != 0 {
        return Err(TestkitError::Other(format!(
            "raw produce to {topic} refused with Kafka error code {error}"
        )));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_reference_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn varints_are_zigzag() {
        let enc = |v| {
            let mut o = Vec::new();
            varint(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(300), [0xd8, 0x04]);
    }
}
