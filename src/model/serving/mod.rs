//! Models in a running engine: the lineup batches score with (`slot.rs`,
//! swapped atomically), the registry of versions and their states
//! (`registry.rs`), the follower that loads what the registry says
//! (`follow.rs`), and the live champion-challenger comparison
//! (`comparison.rs`).

pub mod comparison;
pub mod follow;
pub mod registry;
pub mod slot;
