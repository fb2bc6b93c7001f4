//! Fuzz target for the request-preparation path: a raw HTTP/1.1 request head in, the signed
//! upstream request head out. The properties live in `../check.rs`, shared with the corpus
//! replay test (`tests/fuzz_replay.rs`) so plain `cargo test` re-checks every corpus file.
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run prepare -- -max_total_time=300

#![no_main]

include!("../check.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check_prepare(data);
});
