//! The maths of the models: how a model turns feature rows into
//! probabilities and reasons. Logistic regression, tree ensembles (one
//! tree, a forest, boosted trees) with their TreeSHAP reasons and compact
//! payloads, and the readers of other libraries' files. Knows nothing of
//! bundles or serving.

pub mod calibration;
pub mod import;
pub(crate) mod logistic;
pub mod quantised;
pub mod trees;
mod treeshap;
