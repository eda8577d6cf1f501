#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| drogue_fuzz::device_spec(data));
