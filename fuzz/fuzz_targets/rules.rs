#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lm_ingest_fuzz::rules(data));
