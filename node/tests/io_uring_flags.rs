//! Meridian's vendored glommio patch is in effect.
//!
//! Goal: fail if the executor's main io_uring ring does not run with
//! `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG`, which happens when
//! the workspace's `[patch.crates-io]` entry for glommio is lost, or when the
//! kernel refused the flags (older than 5.19) and glommio fell back to none.
//! Method: start a `LocalExecutor` and read the flags of its main ring through
//! the accessor the patch adds, `glommio::meridian_ring_setup_flags()`.
//! See vendor/README.md. Needs only `glommio` as a dev-dependency.

use glommio::{LocalExecutorBuilder, Placement};

#[test]
fn glommio_main_ring_runs_with_cooperative_task_running() {
    assert_eq!(
        glommio::meridian_ring_setup_flags(),
        None,
        "no executor runs on this thread yet"
    );
    // io_memory below the 8 MiB locked-memory limit of this machine.
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("a LocalExecutor starts");
    let flags = executor.run(async { glommio::meridian_ring_setup_flags() });
    let flags = flags.expect("inside the executor the accessor answers");
    let wanted =
        glommio::MERIDIAN_IORING_SETUP_COOP_TASKRUN | glommio::MERIDIAN_IORING_SETUP_TASKRUN_FLAG;
    assert_eq!(
        flags & wanted,
        wanted,
        "main ring setup flags {flags:#x} lack {wanted:#x}: is the patched glommio \
         (vendor/glommio) in use and the kernel 5.19 or newer?"
    );
}
