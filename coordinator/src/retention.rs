//! Retention: finished jobs are removed from the table and the store, and their outputs deleted,
//! once they are older than `CoordinatorConfig::retain_finished` (each is ~100 KB of record).

use crate::context::Inner;
use crate::job_table::now_ms;
use std::sync::Weak;
use std::time::Duration;

/// How often expired jobs are looked for: a tenth of the retention, within [100 ms, 1 min].
fn period(retain: Duration) -> Duration {
    (retain / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

pub(crate) async fn retention_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let retain = inner.cfg.retain_finished;
        let dirs = inner.lock().expire(now_ms(), retain);
        drop(inner);
        for dir in dirs {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => tracing::info!("removed the expired outputs {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot remove the expired outputs {}: {e}", dir.display()),
            }
        }
        tokio::time::sleep(period(retain)).await;
    }
}
