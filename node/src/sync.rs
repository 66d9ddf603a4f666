//! Issuing stores' sync plans (a checkpoint) without blocking the shard's
//! core.
//!
//! Each file's fdatasync goes through the executor's io_uring (the patched
//! glommio's `meridian_fdatasync`), so the core keeps serving while the disk
//! works. The files of one plan are synced concurrently (one task each), then
//! the directory when the plan names it (an fsync on glommio's blocking pool;
//! it happens once per new segment).

use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use meridian_engine::SyncPlan;

async fn sync_data(file: Arc<std::fs::File>) -> io::Result<()> {
    // `file` lives until the sync completed, so the descriptor stays open.
    glommio::meridian_fdatasync(file.as_raw_fd()).await
}

/// fdatasyncs every file of `plan`, then fsyncs its directory if named.
pub async fn sync_plan_files(plan: &SyncPlan) -> io::Result<()> {
    let tasks: Vec<_> = plan
        .files
        .iter()
        .map(|target| glommio::spawn_local(sync_data(Arc::clone(&target.file))))
        .collect();
    let mut first_error = None;
    for task in tasks {
        if let Err(error) = task.await {
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if let Some(directory) = &plan.directory {
        let directory = Arc::clone(directory);
        glommio::executor()
            .spawn_blocking(move || directory.sync_all())
            .await?;
    }
    Ok(())
}

/// Syncs every plan's files at once: one task per plan.
pub async fn sync_plans(plans: &[(u32, SyncPlan)]) -> Vec<io::Result<()>> {
    let tasks: Vec<_> = plans
        .iter()
        .map(|(_, plan)| {
            let plan = plan.clone();
            glommio::spawn_local(async move { sync_plan_files(&plan).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await);
    }
    results
}
