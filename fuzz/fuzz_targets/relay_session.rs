//! The relay's SMTP session state machine: arbitrary client bytes, split at arbitrary points.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::smtp::server::fuzz_session(data));
