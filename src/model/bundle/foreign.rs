//! A model trained elsewhere wrapped into a bundle (`models import`): the
//! file itself is the payload, read by the maths in `model/maths/import/`.

use std::path::Path;

use super::{Bundle, BundleError, BundleParts};
use crate::model::{FeatureSpec, Model, ModelKind, Preprocessing};

/// What `models import` wraps into a bundle.
pub struct Import<'a> {
    pub kind: ModelKind,
    pub file: &'a Path,
    /// The SQL output columns, in the order of the model's features.
    pub features: &'a [String],
    pub name: &'a str,
    pub version: &'a str,
    pub threshold: f64,
}

/// Reads another library's model and makes a bundle of it: the file itself
/// is the payload. The check row is all zeros (no training row is at hand).
pub fn import(request: &Import) -> Result<Bundle, BundleError> {
    let shown = request.file.display().to_string();
    let bytes = std::fs::read(request.file).map_err(|source| BundleError::Read {
        path: shown.clone(),
        source,
    })?;
    let model = Model::import(request.kind, bytes, request.features.len()).map_err(|message| {
        BundleError::Payload {
            path: shown.clone(),
            file: shown.clone(),
            message,
        }
    })?;
    let mut provenance = std::collections::BTreeMap::new();
    provenance.insert("imported_from".into(), shown);
    provenance.insert("at".into(), chrono::Utc::now().to_rfc3339());
    Bundle::assemble(BundleParts {
        name: request.name.to_owned(),
        version: request.version.to_owned(),
        features: request
            .features
            .iter()
            .map(|name| FeatureSpec {
                name: name.clone(),
                data_type: "Float64".into(),
            })
            .collect(),
        preprocessing: Preprocessing::None,
        threshold: request.threshold,
        provenance,
        metrics: std::collections::BTreeMap::new(),
        model,
        check_features: vec![0.0; request.features.len()],
    })
}
