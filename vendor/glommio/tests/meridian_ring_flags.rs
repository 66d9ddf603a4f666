// MERIDIAN PATCH: this whole file is Meridian's (see vendor/README.md).
//! Goal: the main ring of a `LocalExecutor` runs with
//! `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG`, and socket
//! readiness completions, which now wait for the executor to enter the
//! kernel, are still all delivered.
//! Method: read the flags through `glommio::meridian_ring_setup_flags()`, then
//! echo 2,000 messages over a loopback TCP connection inside one executor
//! (server reads wait on poll completions from the main ring), bounded by a
//! 30 s glommio timeout.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{
    net::{TcpListener, TcpStream},
    LocalExecutorBuilder, Placement,
};
use std::time::Duration;

const WANTED: u32 =
    glommio::MERIDIAN_IORING_SETUP_COOP_TASKRUN | glommio::MERIDIAN_IORING_SETUP_TASKRUN_FLAG;

fn executor() -> glommio::LocalExecutor {
    // io_memory below an 8 MiB locked-memory limit.
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("a LocalExecutor starts")
}

#[test]
fn main_ring_has_cooperative_task_running_flags() {
    assert_eq!(glommio::meridian_ring_setup_flags(), None);
    let flags = executor()
        .run(async { glommio::meridian_ring_setup_flags() })
        .expect("inside the executor the accessor answers");
    assert_eq!(flags & WANTED, WANTED, "main ring setup flags {flags:#x}");
}

#[test]
fn loopback_echo_completes_under_cooperative_task_running() {
    let echoed = executor().run(async {
        glommio::timer::timeout(Duration::from_secs(30), async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let server = glommio::spawn_local(async move {
                let mut stream = listener.accept().await.unwrap();
                let mut buffer = [0u8; 8];
                loop {
                    let count = stream.read(&mut buffer).await.unwrap();
                    if count == 0 {
                        break;
                    }
                    stream.write_all(&buffer[..count]).await.unwrap();
                }
            });
            let mut client = TcpStream::connect(address).await.unwrap();
            let mut echoed = 0u32;
            for round in 0..2_000u32 {
                client.write_all(&round.to_le_bytes()).await.unwrap();
                let mut back = [0u8; 4];
                client.read_exact(&mut back).await.unwrap();
                assert_eq!(u32::from_le_bytes(back), round);
                echoed += 1;
            }
            drop(client);
            server.await;
            Ok(echoed)
        })
        .await
    });
    assert_eq!(echoed.expect("echo finished within the timeout"), 2_000);
}
