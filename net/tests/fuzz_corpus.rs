//! Goal: the committed fuzz seed corpus stays made of valid frames (so the
//! fuzzer starts from inputs that reach deep into message decoding).
//! Method: decode every file; each must yield whole frames whose bodies
//! decode as a request or a response (a client's or a peer's), and nothing
//! left over.

use bytes::BytesMut;
use meridian_net::peer::{PeerRequest, PeerResponse};
use meridian_net::{Decoder, Limits};

#[test]
fn every_seed_is_a_sequence_of_valid_frames() {
    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_decoder");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&directory).expect("corpus directory") {
        let path = entry.expect("entry").path();
        // Committed seeds are `NN-*.bin`; files the fuzzer adds are not checked.
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        let is_seed = name.len() > 3
            && name.as_bytes()[..2].iter().all(u8::is_ascii_digit)
            && name.ends_with(".bin");
        if !is_seed {
            continue;
        }
        let mut input = BytesMut::from(&std::fs::read(&path).expect("read seed")[..]);
        let mut decoder = Decoder::default();
        let mut frames = 0;
        while let Some(frame) = decoder.decode(&mut input).expect("seed decodes") {
            let limits = Limits::default();
            assert!(
                frame.request(&limits).is_ok()
                    || frame.response(&limits).is_ok()
                    || PeerRequest::decode(&frame, &limits).is_ok()
                    || PeerResponse::decode(&frame, &limits).is_ok(),
                "{path:?}"
            );
            frames += 1;
        }
        assert!(
            frames > 0 && input.is_empty(),
            "{path:?}: {frames} frames, {} bytes left",
            input.len()
        );
        seeds += 1;
    }
    assert!(seeds >= 30, "only {seeds} seeds");
}
