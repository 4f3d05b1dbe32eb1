//! Models: the bundle file that carries a model with everything needed to
//! serve it, the scoring maths, training with linfa, and evaluation.

mod bundle;
pub mod evaluate;
mod logistic;
pub mod train;

pub use bundle::{BUNDLE_FORMAT, BundleError, ModelBundle, is_feature_type};
pub use logistic::{REASON_COUNT, Scores};
