//! The book's reference pages list every metric, header and `WEIR_*`
//! variable the code uses: a new one without documentation fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("framework"), root().join("cli/src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("tests") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    assert!(out.len() > 20, "found the sources");
    out
}

/// `"prefix…"` string literals made of `[a-z0-9_-]` (or `[A-Z0-9_]` for env).
fn literals(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let pat = format!("\"{prefix}");
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        let s = &rest[i + 1..];
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(s.len());
        if s[end..].starts_with('"') && end > prefix.len() {
            found.insert(s[..end].to_string());
        }
        rest = &s[end..];
    }
    found
}

fn doc(name: &str) -> String {
    std::fs::read_to_string(root().join("docs").join(name)).unwrap()
}

#[test]
fn every_metric_is_in_the_reference() {
    let reference = doc("reference-metrics.md");
    let mut names = BTreeSet::new();
    for (_, text) in sources() {
        names.extend(literals(&text, "weir_").into_iter().filter(|n| {
            n.ends_with("_total")
                || n.ends_with("_seconds")
                || n.ends_with("_ms")
                || n.ends_with("_depth")
                || n.ends_with("_lag")
                || n.ends_with("_backlog")
                || n.ends_with("_partitions")
                || n.ends_with("_in_flight")
                || n.ends_with("_messages")
                || n.ends_with("_waits")
        }));
    }
    assert!(names.len() > 30, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !reference.contains(&format!("`{n}")) && !reference.contains(&format!(" {n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from docs/reference-metrics.md: {missing:?}"
    );
}

#[test]
fn every_header_is_in_the_reference() {
    let reference = doc("reference-headers.md");
    let mut names = BTreeSet::new();
    for (_, text) in sources() {
        for line in text.lines().filter(|l| l.contains("const ")) {
            names.extend(literals(line, "weir-"));
        }
        for line in text.lines().filter(|l| l.contains("TRACEPARENT")) {
            names.extend(literals(line, "traceparent"));
        }
    }
    assert!(names.len() > 12, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !reference.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "headers missing from docs/reference-headers.md: {missing:?}"
    );
}

#[test]
fn every_config_variable_is_in_the_reference() {
    let reference = doc("reference-config.md");
    let config = std::fs::read_to_string(root().join("framework/weir/src/config/mod.rs")).unwrap();
    let mut names = BTreeSet::new();
    for line in config.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("pub ")
            && let Some((name, _)) = rest.split_once(':')
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            names.insert(name.to_string());
        }
    }
    assert!(names.len() > 15, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| {
            !reference.contains(&format!("`{n}`")) && !reference.contains(&format!(".{n}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config keys missing from docs/reference-config.md: {missing:?}"
    );
}
