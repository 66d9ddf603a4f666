//! Negotiating an XDC link: who each side is, whether they can replicate
//! to each other, and proof that both hold the link's secret — without
//! ever sending it.
//!
//! The exchange (after the frame layer's HELLO with role `xdc`):
//!
//! ```text
//! opener                                   answerer
//!   XDC_OPEN      intro(opener)        ->
//!                                      <-  XDC_CHALLENGE  intro(answerer)
//!                                                         | answerer proof
//!   XDC_PROVE     opener proof         ->
//!                                      <-  XDC_PROVEN
//! ```
//!
//! An introduction carries the protocol version, cluster and datacenter
//! names, the datacenter id (the top 8 bits of every origin it stamps), the
//! ring size, capability bits and a fresh 16-byte random nonce. A proof is
//! HMAC-SHA256 keyed by the secret over a label naming the side, then both
//! introductions (opener first), so:
//! - the secret never crosses the wire, and a passive observer learns
//!   nothing that lets it prove itself later;
//! - each proof covers the other side's fresh nonce, so a recorded proof
//!   is useless on another connection (no replay);
//! - the answerer's proof lets the opener refuse an impostor, the opener's
//!   lets the answerer refuse one; the labels keep a proof of one side from
//!   being reflected as the other's.
//!
//! Ring sizes may differ: records travel by key, and each side places them
//! on its own ring. Datacenter ids must differ, or last-writer-wins could
//! not tell their writes apart.
//!
//! Introduction body (all integers little-endian):
//!
//! ```text
//! protocol_version u8 | datacenter_id u8 | capabilities u32 | partitions u32
//! | nonce [16] | cluster_len u16 | cluster | datacenter_len u16 | datacenter
//! ```
//!
//! Invariants: decoding checks every length before slicing and never
//! panics; MACs are compared in constant time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Longest cluster or datacenter name carried.
pub const NAME_BYTES_MAX: usize = 255;
/// Capability: the sender decodes lz4-compressed batches.
pub const CAPABILITY_LZ4: u32 = 1 << 0;
/// Capability: the sender answers fullsync digest exchanges.
pub const CAPABILITY_FULLSYNC: u32 = 1 << 1;
/// Every capability this build has.
pub const CAPABILITIES: u32 = CAPABILITY_LZ4 | CAPABILITY_FULLSYNC;

const FIXED_LEN: usize = 1 + 1 + 4 + 4 + NONCE_LEN;
const LABEL_OPENER: &[u8] = b"meridian xdc v1 opener";
const LABEL_ANSWERER: &[u8] = b"meridian xdc v1 answerer";

/// One side of a link, as it introduces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    pub protocol_version: u8,
    pub datacenter_id: u8,
    pub capabilities: u32,
    /// The side's ring size (informational: it may differ).
    pub partitions: u32,
    pub nonce: [u8; NONCE_LEN],
    pub cluster: String,
    pub datacenter: String,
}

/// Which side computes a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Opener,
    Answerer,
}

impl Introduction {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(FIXED_LEN + 4 + self.cluster.len() + self.datacenter.len());
        out.push(self.protocol_version);
        out.push(self.datacenter_id);
        out.extend_from_slice(&self.capabilities.to_le_bytes());
        out.extend_from_slice(&self.partitions.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        for name in [&self.cluster, &self.datacenter] {
            let bytes = &name.as_bytes()[..name.len().min(NAME_BYTES_MAX)];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Introduction> {
        let truncated = |needed: usize| Error::Truncated {
            what: "xdc introduction",
            needed: needed as u64,
            available: body.len() as u64,
        };
        if body.len() < FIXED_LEN {
            return Err(truncated(FIXED_LEN));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[10..10 + NONCE_LEN]);
        let mut at = FIXED_LEN;
        let mut names = [String::new(), String::new()];
        for (slot, field) in names.iter_mut().zip(["cluster", "datacenter"]) {
            if body.len() < at + 2 {
                return Err(truncated(at + 2));
            }
            let len = u16::from_le_bytes([body[at], body[at + 1]]) as usize;
            at += 2;
            if len > NAME_BYTES_MAX {
                return Err(Error::Limit {
                    name: field,
                    found: len as u64,
                    max: NAME_BYTES_MAX as u64,
                });
            }
            if body.len() < at + len {
                return Err(truncated(at + len));
            }
            *slot = String::from_utf8(body[at..at + len].to_vec()).map_err(|_| Error::Corrupt {
                what: "xdc introduction",
                offset: at as u64,
                reason: format!("{field} name is not UTF-8"),
            })?;
            at += len;
        }
        if at != body.len() {
            return Err(Error::Corrupt {
                what: "xdc introduction",
                offset: at as u64,
                reason: format!("{} bytes after the datacenter name", body.len() - at),
            });
        }
        let [cluster, datacenter] = names;
        Ok(Introduction {
            protocol_version: body[0],
            datacenter_id: body[1],
            capabilities: u32_at(2),
            partitions: u32_at(6),
            nonce,
            cluster,
            datacenter,
        })
    }

    /// Why `self` and `remote` cannot replicate to each other, if they
    /// cannot: a sentence naming the difference.
    pub fn refusal(&self, remote: &Introduction) -> Option<String> {
        if remote.protocol_version != self.protocol_version {
            return Some(format!(
                "protocol version {} is not spoken here (this side speaks {})",
                remote.protocol_version, self.protocol_version
            ));
        }
        if remote.datacenter_id == self.datacenter_id {
            return Some(format!(
                "both datacenters have datacenter_id {} ({:?} and {:?}): ids must differ so that last-writer-wins can tell their writes apart",
                self.datacenter_id, self.datacenter, remote.datacenter
            ));
        }
        if remote.datacenter == self.datacenter {
            return Some(format!(
                "both datacenters are named {:?}: names must differ",
                self.datacenter
            ));
        }
        if remote.capabilities & CAPABILITY_LZ4 == 0 {
            return Some("the remote side does not decode lz4 batches".to_string());
        }
        None
    }
}

/// A fresh random nonce (from the operating system's generator).
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    nonce
}

fn keyed(
    secret: &[u8],
    side: Side,
    opener: &Introduction,
    answerer: &Introduction,
) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(match side {
        Side::Opener => LABEL_OPENER,
        Side::Answerer => LABEL_ANSWERER,
    });
    for intro in [opener, answerer] {
        let body = intro.encode();
        mac.update(&(body.len() as u32).to_le_bytes());
        mac.update(&body);
    }
    mac
}

/// The proof `side` sends: HMAC-SHA256(secret, label ‖ opener ‖ answerer).
pub fn proof(
    secret: &[u8],
    side: Side,
    opener: &Introduction,
    answerer: &Introduction,
) -> [u8; PROOF_LEN] {
    keyed(secret, side, opener, answerer)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `presented` is `side`'s proof for these introductions
/// (compared in constant time).
pub fn verify(
    secret: &[u8],
    side: Side,
    opener: &Introduction,
    answerer: &Introduction,
    presented: &[u8],
) -> bool {
    keyed(secret, side, opener, answerer)
        .verify_slice(presented)
        .is_ok()
}

/// The id both sides give a link: opener's datacenter id in the high byte,
/// answerer's in the low byte. Carried in every BATCH and ACK.
pub const fn link_id(opener_datacenter: u8, answerer_datacenter: u8) -> u32 {
    ((opener_datacenter as u32) << 8) | answerer_datacenter as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intro(datacenter_id: u8, name: &str) -> Introduction {
        Introduction {
            protocol_version: 1,
            datacenter_id,
            capabilities: CAPABILITIES,
            partitions: 256,
            nonce: fresh_nonce(),
            cluster: "meridian".to_string(),
            datacenter: name.to_string(),
        }
    }

    #[test]
    fn introduction_round_trips_and_refuses_damage() {
        let original = intro(3, "paris");
        let body = original.encode();
        assert_eq!(Introduction::decode(&body).expect("decodes"), original);
        for cut in 0..body.len() {
            assert!(Introduction::decode(&body[..cut]).is_err(), "prefix {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Introduction::decode(&longer).is_err());
    }

    #[test]
    fn proofs_verify_only_with_the_same_secret_side_and_nonces() {
        let (opener, answerer) = (intro(1, "east"), intro(2, "west"));
        let proof = proof(b"s3cret", Side::Opener, &opener, &answerer);
        assert!(verify(b"s3cret", Side::Opener, &opener, &answerer, &proof));
        assert!(!verify(b"other", Side::Opener, &opener, &answerer, &proof));
        assert!(!verify(
            b"s3cret",
            Side::Answerer,
            &opener,
            &answerer,
            &proof
        ));
        let replayed = intro(2, "west");
        assert!(!verify(b"s3cret", Side::Opener, &opener, &replayed, &proof));
        assert!(!verify(
            b"s3cret",
            Side::Opener,
            &opener,
            &answerer,
            &proof[..31]
        ));
    }

    #[test]
    fn refusals_name_the_difference() {
        let local = intro(1, "east");
        assert_eq!(local.refusal(&intro(2, "west")), None);
        let same_id = local.refusal(&intro(1, "west")).expect("refused");
        assert!(same_id.contains("datacenter_id 1"), "{same_id}");
        let mut old = intro(2, "west");
        old.protocol_version = 9;
        assert!(local
            .refusal(&old)
            .expect("refused")
            .contains("protocol version 9"));
        assert!(local
            .refusal(&intro(2, "east"))
            .expect("refused")
            .contains("named"));
    }
}
