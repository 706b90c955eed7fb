//! The relay's SASL PLAIN and LOGIN decoders (what a legacy app sends after AUTH).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::smtp::server::fuzz_auth_decoders(data));
