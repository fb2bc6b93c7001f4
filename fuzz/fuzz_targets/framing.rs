//! Fuzz target for the HTTP/1 framing watch (`src/framing.rs`): an arbitrary request stream,
//! cut into reads two ways. The properties live in `../check.rs`, shared with the corpus replay
//! test (`tests/fuzz_replay.rs`).
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run framing -- -max_total_time=300

#![no_main]

include!("../check.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check_framing(data);
});
