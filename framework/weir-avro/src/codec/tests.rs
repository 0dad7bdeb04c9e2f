use apache_avro::Schema;
use weir::codec::Part;

use super::decode::read_datum;
use super::*;
use proptest::prelude::*;

#[test]
fn frames_split_and_join() {
    assert_eq!(&frame(7, &[1, 2])[..], &[0, 0, 0, 0, 7, 1, 2]);
    assert_eq!(split_frame(&[]), Err(FrameError::Empty));
    assert_eq!(
        split_frame(b"{\"a\":1}"),
        Err(FrameError::WrongMagicByte(b'{'))
    );
    assert_eq!(split_frame(&[0, 0, 1]), Err(FrameError::ShortHeader(3)));
    assert_eq!(split_frame(&[0, 0, 0, 0, 1]).unwrap(), (1, &[][..]));
}

#[test]
fn subjects() {
    let s = SubjectNameStrategy::TopicName;
    assert_eq!(
        s.subject("clicks", Part::Value, None).unwrap(),
        "clicks-value"
    );
    assert_eq!(s.subject("clicks", Part::Key, None).unwrap(), "clicks-key");
    let r = SubjectNameStrategy::RecordName;
    assert_eq!(
        r.subject("clicks", Part::Value, Some("a.Click")).unwrap(),
        "a.Click"
    );
    assert!(r.subject("clicks", Part::Value, None).is_err());
    let tr = SubjectNameStrategy::TopicRecordName;
    assert_eq!(
        tr.subject("clicks", Part::Value, Some("a.Click")).unwrap(),
        "clicks-a.Click"
    );
}

const FUZZ_SCHEMAS: &[&str] = &[
    r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":"long"},{"name":"s","type":"string"},
        {"name":"u","type":["null","string"]},{"name":"m","type":{"type":"map","values":"bytes"}}]}"#,
    r#"{"type":"record","name":"N","fields":[
        {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
        {"name":"f","type":{"type":"fixed","name":"F","size":4}},
        {"name":"arr","type":{"type":"array","items":"double"}},
        {"name":"next","type":["null","N"]}]}"#,
    r#"["null","int","string",{"type":"array","items":"string"}]"#,
];

fn fuzz_cases() -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    ProptestConfig::with_cases(n)
}

proptest! {
    #![proptest_config(fuzz_cases())]

    /// Any bytes: split_frame never panics, and frame/split round-trips.
    #[test]
    fn frame_round_trip(id in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64),
                        junk in proptest::collection::vec(any::<u8>(), 0..16)) {
        let f = frame(id, &body);
        let (i, b) = split_frame(&f).unwrap();
        prop_assert_eq!(i, id);
        prop_assert_eq!(b, &body[..]);
        let _ = split_frame(&junk);
    }

    /// Any body bytes read with real schemas (records, unions, maps, arrays,
    /// enums, fixed, recursion), with and without a reader schema: an error
    /// or a value, never a panic, and allocations bounded by the limit.
    #[test]
    fn datum_reader_never_panics(which in 0..FUZZ_SCHEMAS.len(), body in proptest::collection::vec(any::<u8>(), 0..96)) {
        crate::set_max_allocation_bytes(crate::DEFAULT_MAX_ALLOCATION_BYTES);
        let schema = Schema::parse_str(FUZZ_SCHEMAS[which]).unwrap();
        let _ = read_datum(&schema, None, &body);
        let _ = read_datum(&schema, Some(&schema), &body);
    }
}
