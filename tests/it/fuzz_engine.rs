//! The engine fuzz harness (fuzz/harness/engine.rs) on proptest's inputs,
//! briefly, so that CI runs it; the long coverage-guided runs are
//! `cargo fuzz run engine` (README "Tests").

use std::sync::OnceLock;

use proptest::prelude::*;

#[path = "../../fuzz/harness/engine.rs"]
mod harness;

fn harness() -> &'static harness::Harness {
    static HARNESS: OnceLock<harness::Harness> = OnceLock::new();
    HARNESS.get_or_init(|| harness::Harness::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))))
}

/// A record's bytes: mostly transactions built from arbitrary fields (odd
/// first byte), some raw bytes.
fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(mode, rest)| [vec![mode | 1], rest].concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
    ]
    .prop_map(|mut bytes| {
        bytes.retain(|&b| b != b'\n');
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// No batch of anything panics the engine or fails but on the store.
    #[test]
    fn no_batch_stops_the_engine(
        how in any::<u8>(),
        records in proptest::collection::vec(record(), 1..30),
    ) {
        let mut data = vec![how];
        data.extend(records.join(&b'\n'));
        harness().run(&data);
    }
}
