//! Answering other members: the server side of the peer protocol.
//!
//! A peer's request runs as its own task on the shard that received it;
//! vnode operations go to the shard that owns the vnode (as client requests
//! do). A failure becomes an ERROR frame with a code and a message.

use std::rc::Rc;

use meridian_net::peer::{PeerRequest, PeerResponse, ReplicaRecord};
use meridian_net::{ErrorCode, Response};

use super::coordinator::local_peer_op;
use crate::shard::{PeerOp, Shard};

fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

/// Serves one peer request.
pub async fn serve_peer(shard: Rc<Shard>, request: PeerRequest) -> Result<PeerResponse, Response> {
    let Some(cluster) = shard.cluster.as_ref() else {
        return Err(refuse(
            ErrorCode::ClusterMismatch,
            "this node is a cluster of one",
        ));
    };
    let partitions = shard.config.storage.partitions;
    let check = |partition: u32| {
        if partition < partitions {
            Ok(())
        } else {
            Err(refuse(
                ErrorCode::MalformedBody,
                format!("partition {partition} out of range (ring of {partitions})"),
            ))
        }
    };
    let storage = |reason: String| refuse(ErrorCode::StorageError, reason);
    match request {
        PeerRequest::Heartbeat {
            node_id,
            ring_epoch,
        } => {
            cluster.heard_from(node_id);
            cluster.peer_reported_epoch(node_id, ring_epoch);
            Ok(PeerResponse::HeartbeatReply {
                node_id: cluster.self_id,
                ring_epoch: cluster.epoch(),
            })
        }
        PeerRequest::Gossip { ring } => {
            // The sender's ring is adopted if it wins; either way the answer
            // is the ring held now, so both sides end with the winner.
            super::membership::adopt_bytes(&shard, &ring);
            Ok(PeerResponse::GossipReply {
                ring: bytes::Bytes::from(meridian_ring::encode(&cluster.view().ring)),
            })
        }
        PeerRequest::Membership(request) => super::membership::serve(Rc::clone(&shard), request)
            .await
            .map_err(|(code, message)| refuse(code, message)),
        PeerRequest::ReplicaRead { partition, key } => {
            check(partition)?;
            local_peer_op(&shard, partition, PeerOp::Read { key })
                .await
                .map_err(storage)
        }
        PeerRequest::Digests {
            partition,
            first_bucket,
            count,
        } => {
            check(partition)?;
            local_peer_op(
                &shard,
                partition,
                PeerOp::Digests {
                    first_bucket,
                    count,
                },
            )
            .await
            .map_err(storage)
        }
        PeerRequest::BucketEntries { partition, bucket } => {
            check(partition)?;
            local_peer_op(&shard, partition, PeerOp::BucketEntries { bucket })
                .await
                .map_err(storage)
        }
        PeerRequest::ReplicaWrite { hint_for, records } => {
            let mut statuses = Vec::with_capacity(records.len());
            // Records arrive grouped by partition (one write names one vnode
            // in practice); each run of one partition is applied at once.
            let mut start = 0;
            while start < records.len() {
                let partition = records[start].partition;
                check(partition)?;
                let end = records[start..]
                    .iter()
                    .position(|r| r.partition != partition)
                    .map_or(records.len(), |n| start + n);
                let run: Vec<ReplicaRecord> = records[start..end].to_vec();
                match local_peer_op(
                    &shard,
                    partition,
                    PeerOp::Write {
                        records: run,
                        hint_for,
                    },
                )
                .await
                .map_err(storage)?
                {
                    PeerResponse::ReplicaWritten { statuses: applied } => statuses.extend(applied),
                    other => {
                        return Err(refuse(
                            ErrorCode::Internal,
                            format!("unexpected vnode answer {other:?}"),
                        ))
                    }
                }
                start = end;
            }
            Ok(PeerResponse::ReplicaWritten { statuses })
        }
    }
}
