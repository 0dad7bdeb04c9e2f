use super::*;

fn end(partition: i32, next: i64, halted: Option<i64>) -> WorkerEnd {
    WorkerEnd {
        partition,
        next,
        halted,
    }
}

#[test]
fn commits_what_was_processed_unless_the_range_was_seen_to_its_end() {
    let ranges = BTreeMap::from([(0, (0, 10)), (1, (5, 20)), (2, (0, 6))]);
    let ends = [end(0, 4, None), end(1, 12, Some(12)), end(2, 5, None)];
    // The poll thread died: partition 0 stopped at 4 (not the range end),
    // partition 1 halted at 12, partition 2 was seen through to its end
    // (offset 5 is a transaction marker: no message, yet done).
    let finished = std::collections::BTreeSet::from([2]);
    assert_eq!(
        commit_positions(&ranges, &ends, &finished),
        vec![(0, 4), (1, 12), (2, 6)]
    );
    // Nothing processed and nothing seen: the start, never the end.
    assert_eq!(
        commit_positions(&ranges, &[end(0, 0, None)], &Default::default()),
        vec![(0, 0)]
    );
}
