//! Reading a Weir consumer's `/metrics` (Prometheus text format 0.0.4).
//!
//! The console needs a handful of Weir's series, summed over their labels:
//! in-flight, halted partitions, retry and DLQ publishes, processing latency
//! quantiles. Lines it cannot read are skipped: a consumer's endpoint is
//! input like any other.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the samples of a text exposition; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            r = r.trim_start_matches([',', ' ']);
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=')?;
            let key = r[..eq].trim().to_string();
            let v = r[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = v.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key, value);
            r = &v[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The sum of `name` over all its label sets (`None` when absent).
pub fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let total = samples
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
        .inspect(|_| found = true)
        .map(|s| s.value)
        .sum();
    found.then_some(total)
}

/// The largest value of `name` with label `quantile` = `q` (the slowest of
/// the consumer's label sets), `None` when absent.
pub fn quantile(samples: &[Sample], name: &str, q: &str) -> Option<f64> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && s.labels.get("quantile").map(String::as_str) == Some(q)
                && s.value.is_finite()
        })
        .map(|s| s.value)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP weir_in_flight Messages being processed now.
# TYPE weir_in_flight gauge
weir_in_flight{group="billing"} 3
weir_in_flight{group="audit"} 2
weir_processing_seconds{group="billing",quantile="0.5"} 0.004
weir_processing_seconds{group="billing",quantile="0.99"} 0.25
weir_processing_seconds{group="audit",quantile="0.99"} 0.5
weir_dlq_published_total{group="billing",topic="a\"b"} 7 1700000000000
weir_odd{x="unterminated} 1
garbage line
weir_nan NaN
"#;

    #[test]
    fn sums_and_quantiles() {
        let s = parse(TEXT);
        assert_eq!(sum(&s, "weir_in_flight"), Some(5.0));
        assert_eq!(sum(&s, "weir_dlq_published_total"), Some(7.0));
        assert_eq!(sum(&s, "weir_missing"), None);
        assert_eq!(sum(&s, "weir_nan"), None, "NaN is not a value");
        assert_eq!(quantile(&s, "weir_processing_seconds", "0.5"), Some(0.004));
        assert_eq!(
            quantile(&s, "weir_processing_seconds", "0.99"),
            Some(0.5),
            "the slowest group's"
        );
        let dlq = s
            .iter()
            .find(|x| x.name == "weir_dlq_published_total")
            .unwrap();
        assert_eq!(dlq.labels["topic"], "a\"b");
        assert!(
            s.iter()
                .all(|x| x.name != "weir_odd" && x.name != "garbage")
        );
    }

    #[test]
    fn hostile_text_never_panics() {
        for t in [
            "{",
            "a{",
            "a{b",
            "a{b=",
            "a{b=\"",
            "a{b=\"\\",
            "a{b=\"c\"",
            "a{} x",
            "\u{0}",
        ] {
            let _ = parse(t);
        }
    }
}
