//! The whole engine on arbitrary batches (fuzz/harness/engine.rs).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../harness/engine.rs"]
mod harness;

static HARNESS: OnceLock<harness::Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS
        .get_or_init(|| harness::Harness::new(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))))
        .run(data);
});
