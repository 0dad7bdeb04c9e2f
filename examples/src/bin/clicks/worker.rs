//! The worker: enriches a click (user agent, country) and stores it in the
//! `clicks` table inside the idempotency transaction; some first tries fail
//! transiently and go through a retry tier. The pipeline runs it on batches
//! (`TxBatchProcessor`: one multi-row insert per batch); the single-message
//! `TxProcessor` stays for comparison and for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sqlx::{Postgres, Sqlite, Transaction};
use weir::batch::Outcomes;
use weir::clock::now_ms;
use weir::{Message, ProcessError};
use weir_idempotency::{TxBatchProcessor, TxProcessor};

use crate::ClickEvent;
use crate::enrich::{self, Geo, enrich};

/// Deterministic "does this event's first enrichment fail?" (FNV-1a of the id).
fn fails_first(id: &str, rate: f64) -> bool {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    ((h % 10_000) as f64) < rate * 10_000.0
}

pub(crate) struct Worker {
    pub(crate) geo: Geo,
    pub(crate) failure_rate: f64,
    pub(crate) retried: AtomicU64,
}

impl Worker {
    /// Enriches, or fails transiently (a geo service timing out) on the first try of some events.
    fn enrich(
        &self,
        msg: &Message<ClickEvent>,
    ) -> Result<(String, enrich::Enriched), ProcessError> {
        let id = msg.message_id().unwrap_or_default().to_string();
        if msg.attempt() > 1 {
            self.retried.fetch_add(1, Relaxed);
        } else if fails_first(&id, self.failure_rate) {
            return Err(
                ProcessError::retryable(std::io::Error::other("geo lookup timed out"))
                    .with_class("geo_timeout"),
            );
        }
        let e = msg.value();
        Ok((id, enrich(&self.geo, &e.ip, &e.user_agent)))
    }
}

fn db_err(e: sqlx::Error) -> ProcessError {
    ProcessError::retryable(e).with_class("db")
}

impl TxProcessor<ClickEvent, Postgres> for Arc<Worker> {
    async fn process(
        &self,
        msg: Message<ClickEvent>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), ProcessError> {
        let (id, en) = self.enrich(&msg)?;
        let e = msg.value();
        sqlx::query(
            "INSERT INTO clicks (event_id, link_code, clicked_at_ms, processed_at_ms, ip, browser, os, device, country, referrer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(&e.link)
        .bind(e.at_ms)
        .bind(now_ms())
        .bind(&e.ip)
        .bind(en.browser)
        .bind(en.os)
        .bind(en.device)
        .bind(en.country)
        .bind(&e.referrer)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

impl TxProcessor<ClickEvent, Sqlite> for Arc<Worker> {
    async fn process(
        &self,
        msg: Message<ClickEvent>,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(), ProcessError> {
        let (id, en) = self.enrich(&msg)?;
        let e = msg.value();
        sqlx::query(
            "INSERT INTO clicks (event_id, link_code, clicked_at_ms, processed_at_ms, ip, browser, os, device, country, referrer) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&e.link)
        .bind(e.at_ms)
        .bind(now_ms())
        .bind(&e.ip)
        .bind(en.browser)
        .bind(en.os)
        .bind(en.device)
        .bind(en.country)
        .bind(&e.referrer)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// A row to write: event id, enrichment, index in the batch.
type Row = (String, enrich::Enriched, usize);

/// Enriches a batch: the rows to write, and an outcome per message (a failed
/// enrichment writes nothing for its message).
fn enrich_batch(
    w: &Worker,
    batch: &[Message<ClickEvent>],
) -> (Vec<Row>, Vec<Result<(), ProcessError>>) {
    let mut rows = Vec::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, msg) in batch.iter().enumerate() {
        match w.enrich(msg) {
            Ok((id, en)) => {
                rows.push((id, en, i));
                outcomes.push(Ok(()));
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    (rows, outcomes)
}

impl TxBatchProcessor<ClickEvent, Postgres> for Arc<Worker> {
    async fn process_batch(
        &self,
        batch: Vec<Message<ClickEvent>>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Outcomes, ProcessError> {
        let (rows, outcomes) = enrich_batch(self, &batch);
        if !rows.is_empty() {
            let now = now_ms();
            let col = |f: &dyn Fn(&Row) -> String| -> Vec<String> { rows.iter().map(f).collect() };
            let ids = col(&|r| r.0.clone());
            let links = col(&|r| batch[r.2].value().link.clone());
            let ips = col(&|r| batch[r.2].value().ip.clone());
            let browsers = col(&|r| r.1.browser.to_string());
            let oses = col(&|r| r.1.os.to_string());
            let devices = col(&|r| r.1.device.to_string());
            let countries = col(&|r| r.1.country.to_string());
            let referrers: Vec<Option<String>> = rows
                .iter()
                .map(|r| batch[r.2].value().referrer.clone())
                .collect();
            let at: Vec<i64> = rows.iter().map(|r| batch[r.2].value().at_ms).collect();
            sqlx::query(
                "INSERT INTO clicks (event_id, link_code, clicked_at_ms, processed_at_ms, ip, browser, os, device, country, referrer) \
                 SELECT u.id, u.link, u.at, $1, u.ip, u.browser, u.os, u.device, u.country, u.referrer \
                 FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) \
                 AS u(id, link, at, ip, browser, os, device, country, referrer)",
            )
            .bind(now)
            .bind(&ids)
            .bind(&links)
            .bind(&at)
            .bind(&ips)
            .bind(&browsers)
            .bind(&oses)
            .bind(&devices)
            .bind(&countries)
            .bind(&referrers)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        Ok(Outcomes::new(outcomes))
    }
}

impl TxBatchProcessor<ClickEvent, Sqlite> for Arc<Worker> {
    async fn process_batch(
        &self,
        batch: Vec<Message<ClickEvent>>,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<Outcomes, ProcessError> {
        // SQLite is in-process: one statement per row inside the batch's one
        // transaction costs little; the transaction (one fsync) is the saving.
        let (rows, outcomes) = enrich_batch(self, &batch);
        let now = now_ms();
        for (id, en, i) in rows {
            let e = batch[i].value();
            sqlx::query(
                "INSERT INTO clicks (event_id, link_code, clicked_at_ms, processed_at_ms, ip, browser, os, device, country, referrer) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&e.link)
            .bind(e.at_ms)
            .bind(now)
            .bind(&e.ip)
            .bind(en.browser)
            .bind(en.os)
            .bind(en.device)
            .bind(en.country)
            .bind(&e.referrer)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        Ok(Outcomes::new(outcomes))
    }
}
