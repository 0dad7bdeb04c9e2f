//! The `weir` command as a library: build your own binary with your processor
//! registered for `replay`.
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     replay: weir_cli::ReplayArgs,
//! }
//!
//! # async fn demo(my_processor: impl weir::Processor<String>) -> anyhow::Result<()> {
//! let cli = Cli::parse();
//! let report = weir_cli::run_replay(cli.replay, weir::StringCodec, my_processor).await?;
//! println!("{} messages re-processed", report.processed);
//! # Ok(()) }
//! ```

use anyhow::Context;
use clap::Args;
use weir::replay::{Position, Replay, ReplayReport};
use weir::{Codec, ConsumerConfig, Processor};

/// Arguments of a replay run.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub brokers: String,
    /// A Weir config file (TOML) for the `[kafka]` properties (SASL, TLS) and timeouts.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The topic to replay.
    #[arg(long)]
    pub topic: String,
    /// Start: an offset, `earliest`, or an RFC 3339 time.
    #[arg(long)]
    pub from: String,
    /// End (exclusive): an offset, `end`, or an RFC 3339 time.
    #[arg(long, default_value = "end")]
    pub to: String,
    /// The replay's own consumer group (never the production group).
    #[arg(long)]
    pub group: String,
    /// JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ReplayArgs {
    /// The replay's consumer config: `--config` (its `[kafka]` SASL/TLS
    /// properties and timeouts), then `WEIR_*` variables, then `--brokers`
    /// and `--group`. The `--copy-to` producer is built from the same config,
    /// so it connects with the same credentials.
    pub fn consumer_config(&self) -> anyhow::Result<ConsumerConfig> {
        let base = match &self.config {
            Some(p) => ConsumerConfig::from_file(p)?,
            None => ConsumerConfig::default(),
        };
        let mut cfg = base.with_env(std::env::vars())?;
        cfg.brokers = self.brokers.clone();
        cfg.group_id = self.group.clone();
        Ok(cfg)
    }
}

/// Parses `earliest`, `end`, an offset, or an RFC 3339 time.
pub fn parse_position(s: &str) -> anyhow::Result<Position> {
    match s {
        "earliest" | "beginning" => Ok(Position::Earliest),
        "end" | "latest" => Ok(Position::End),
        _ => {
            if let Ok(o) = s.parse::<i64>() {
                return Ok(Position::Offset(o));
            }
            humantime::parse_rfc3339_weak(s)
                .map(Position::Time)
                .with_context(|| format!("`{s}`: expected an offset, `earliest`, `end`, or an RFC 3339 time such as 2026-11-20T10:00:00Z"))
        }
    }
}

/// Runs a replay of `args` with `processor`, showing a progress bar (rate, ETA) on stderr.
pub async fn run_replay<C, P>(
    args: ReplayArgs,
    codec: C,
    processor: P,
) -> anyhow::Result<ReplayReport>
where
    C: Codec,
    P: Processor<C::Value>,
{
    let cfg = args.consumer_config()?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replay {bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let report = Replay::range(
        cfg,
        &args.topic,
        parse_position(&args.from)?,
        parse_position(&args.to)?,
    )
    .on_progress(move |done, total| {
        b.set_length(total);
        b.set_position(done);
    })
    .run(codec, processor)
    .await?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "processed": report.processed,
                "ranges": report.ranges.iter().map(|(p, (s, e))| serde_json::json!({"partition": p, "from": s, "to": e})).collect::<Vec<_>>(),
                "halted": report.halted,
                "committed": report.committed,
            })
        );
    } else {
        println!("replayed {} message(s) of {}", report.processed, args.topic);
        for (p, (s, e)) in &report.ranges {
            println!("  partition {p}: [{s}, {e})");
        }
        for (p, o) in &report.halted {
            println!("  partition {p} halted at offset {o} (failure sink)");
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_config_keeps_the_files_security_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "brokers = \"ignored:1\"\ngroup_id = \"ignored\"\ntopics = [\"t\"]\n[kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.username\" = \"weir\"\n",
        )
        .unwrap();
        let args = ReplayArgs {
            brokers: "b:9092".into(),
            config: Some(path),
            topic: "t".into(),
            from: "earliest".into(),
            to: "end".into(),
            group: "replay-g".into(),
            json: false,
        };
        let cfg = args.consumer_config().unwrap();
        assert_eq!(cfg.brokers, "b:9092");
        assert_eq!(cfg.group_id, "replay-g");
        assert_eq!(
            cfg.kafka.get("security.protocol").map(String::as_str),
            Some("SASL_SSL")
        );
        assert_eq!(
            cfg.kafka.get("sasl.username").map(String::as_str),
            Some("weir")
        );
    }
}
