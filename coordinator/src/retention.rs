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
        // Inputs no job refers to go once they are as old as finished jobs may be.
        let keep: std::collections::HashSet<_> = inner
            .lock()
            .jobs()
            .flat_map(|j| {
                let i = &j.resolved.spec.inputs;
                i.image
                    .iter()
                    .chain(&i.last_image)
                    .chain(&i.video)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let inputs = inner.inputs();
        drop(inner);
        match tokio::task::spawn_blocking(move || inputs.sweep(&keep, retain)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} unused inputs"),
            Err(e) => tracing::warn!("the input sweep failed: {e}"),
        }
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
