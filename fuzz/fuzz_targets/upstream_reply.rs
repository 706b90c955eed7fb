//! The upstream client's reply and EHLO parsers (what the provider, or an impostor, sends).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postern::smtp::client::fuzz_reply(data));
