//! Goal: the engine's decoders return an error, never panic, on any bytes.
//! Method: feed the input to `decode_header`, `decode_record` (also from
//! every offset of the first 64 bytes, as a scan would after a bad record)
//! and `decode_hint_file`; a record that decodes must fit the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_engine::format::{
    decode_header, decode_hint_file, decode_record, decode_segment_header,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = decode_header(data) {
        assert!(header.record_len() <= data.len());
    }
    for start in 0..data.len().min(64) {
        if let Ok(header) = decode_record(&data[start..]) {
            assert!(header.record_len() <= data.len() - start);
        }
    }
    if let Ok(hint) = decode_hint_file(data) {
        assert!(hint.entries.len() * 40 < data.len());
    }
    let _ = decode_segment_header(data);
});
