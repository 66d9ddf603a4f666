//! Issuing a store's sync plan without blocking the shard's core.
//!
//! Each file's fdatasync runs on glommio's blocking-thread pool, so the
//! executor keeps serving while the disk works; the files of one plan are
//! synced concurrently, then the directory when the plan names it.

use std::io;
use std::sync::Arc;

use meridian_engine::SyncPlan;

async fn sync_file(file: Arc<std::fs::File>, data_only: bool) -> io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            if data_only {
                file.sync_data()
            } else {
                file.sync_all()
            }
        })
        .await
}

/// fdatasyncs every file of `plan`, then fsyncs its directory if named.
pub async fn sync_plan_files(plan: &SyncPlan) -> io::Result<()> {
    let pending: Vec<_> = plan
        .files
        .iter()
        .map(|target| sync_file(Arc::clone(&target.file), true))
        .collect();
    let mut first_error = None;
    for wait in pending {
        if let Err(error) = wait.await {
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if let Some(directory) = &plan.directory {
        sync_file(Arc::clone(directory), false).await?;
    }
    Ok(())
}
