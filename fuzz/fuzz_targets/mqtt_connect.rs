#![no_main]

use std::sync::LazyLock;

static CLOUD: LazyLock<drogue_fuzz::Cloud> = LazyLock::new(drogue_fuzz::Cloud::new);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drogue_fuzz::mqtt_connect(&CLOUD, data);
});
