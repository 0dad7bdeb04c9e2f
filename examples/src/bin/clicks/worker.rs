//! The worker: enriches a click (user agent, country) and stores it in the
//! `clicks` table inside the idempotency transaction; some first tries fail
//! transiently and go through a retry tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sqlx::{Postgres, Sqlite, Transaction};
use weir::clock::now_ms;
use weir::{Message, ProcessError};
use weir_idempotency::TxProcessor;

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
