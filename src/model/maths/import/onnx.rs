//! Any other model, as ONNX, through tract (pure Rust; nothing downloaded):
//! one float input of N x features, and an output of probabilities (N x 2,
//! the fraud class second, as skl2onnx writes with `zipmap` off; or N x 1 /
//! N). The bundle keeps the `.onnx` file as its payload.

use std::sync::Arc;

use ndarray::ArrayView2;
use tract_onnx::prelude::*;

pub const PAYLOAD_FILE: &str = "model.onnx";

/// A planned ONNX model and where its probability of fraud is.
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    /// The output holding the probabilities.
    output: usize,
    /// Its column holding the fraud class (1 of 2, or 0 of 1).
    column: usize,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("output", &self.output)
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

/// Two models are the same when their files are: the plan follows from
/// the file, and [`super::super::Model::Onnx`] compares the files.
impl PartialEq for OnnxModel {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl OnnxModel {
    /// Plans `file` for rows of `features` floats and checks, on one row of
    /// zeros, that it answers with probabilities. `Err` says why not.
    pub fn parse(file: &[u8], features: usize) -> Result<Self, String> {
        let fail = |what: &str, e: TractError| format!("{what}: {e:#}");
        let model = tract_onnx::onnx()
            .model_for_read(&mut &file[..])
            .map_err(|e| fail("not a readable ONNX model", e))?;
        let inputs = model
            .input_outlets()
            .map_err(|e| fail("no inputs", e))?
            .len();
        if inputs != 1 {
            return Err(format!(
                "the ONNX model has {inputs} inputs; it must take one float tensor of rows x features"
            ));
        }
        // The probabilities output: named so (skl2onnx), else the last one.
        let outputs = model.output_outlets().map_err(|e| fail("no outputs", e))?;
        let output = outputs
            .iter()
            .position(|o| model.outlet_label(*o) == Some("probabilities"))
            .unwrap_or(outputs.len().saturating_sub(1));
        let rows = model.symbols.sym("N");
        let plan = model
            .with_input_fact(0, f32::fact([rows.to_dim(), features.to_dim()]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                fail(
                    &format!(
                        "the ONNX model does not plan for rows of {features} features (--features)"
                    ),
                    e,
                )
            })?;
        let mut model = Self {
            plan,
            output,
            column: 0,
        };
        // Two rows, not one: a model whose output does not grow with the
        // rows (a constant, a reduction) looks right on one row and then
        // answers a batch with too few values.
        let probe = model
            .run(&ndarray::Array2::zeros((2, features)).view())
            .map_err(|e| {
                format!(
                    "the ONNX model does not run on rows of {features} features (--features): {e}"
                )
            })?;
        model.column = match probe.shape() {
            [2, 2] => 1,
            [2, 1] | [2] => 0,
            other => {
                return Err(format!(
                    "the ONNX model's probabilities have shape {other:?} for two rows; expected \
                     one output per row: [2, 2] (the fraud class second), [2, 1] or [2]"
                ));
            }
        };
        Ok(model)
    }

    fn run(&self, x: &ArrayView2<f64>) -> Result<Tensor, String> {
        let values: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let input = Tensor::from_shape(&[x.nrows(), x.ncols()], &values)
            .map_err(|e| format!("rows do not make a tensor: {e:#}"))?;
        let mut outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| format!("the ONNX model failed: {e:#}"))?;
        if self.output >= outputs.len() {
            return Err(format!("the ONNX model has no output {}", self.output));
        }
        outputs
            .swap_remove(self.output)
            .into_tensor()
            .cast_to::<f32>()
            .map(|t| t.into_owned())
            .map_err(|e| format!("the ONNX model's probabilities are not numbers: {e:#}"))
    }

    /// The probability of fraud per row; NaN for every row if the model
    /// fails (the engine then refuses them, saying so).
    pub fn probabilities(&self, x: ArrayView2<f64>) -> Vec<f64> {
        let rows = x.nrows();
        if rows == 0 {
            return Vec::new();
        }
        match self.run(&x) {
            Ok(tensor) => match tensor.to_plain_array_view::<f32>() {
                // One value per row (two with the fraud class second), as
                // the load's probe found; anything else is refused row by
                // row rather than read out of step with the rows.
                Ok(view) if view.len() == rows * (self.column + 1) => view
                    .iter()
                    .skip(self.column)
                    .step_by(self.column + 1)
                    .map(|&p| f64::from(p))
                    .collect(),
                Ok(view) => {
                    tracing::error!(
                        rows,
                        values = view.len(),
                        "the ONNX model's output does not hold one probability per row"
                    );
                    vec![f64::NAN; rows]
                }
                Err(e) => {
                    tracing::error!(error = %e, "the ONNX model's output does not read");
                    vec![f64::NAN; rows]
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "the ONNX model failed on a batch");
                vec![f64::NAN; rows]
            }
        }
    }
}
