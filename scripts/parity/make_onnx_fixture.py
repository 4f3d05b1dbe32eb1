#!/usr/bin/env python3
"""The ONNX fixture for the imported-model parity tests (tests/it/imported.rs).

Trains a small scikit-learn pipeline (standard scaling, then a multi-layer
perceptron) on the same simulated transactions as make_fixtures.py,
converts it with skl2onnx, and writes into tests/fixtures/imported/:
  onnx_mlp.onnx          the model: input `x` (float32, N x 5), outputs
                         `label` and `probabilities` (N x 2, no zipmap)
  onnx_mlp_pred.csv      scikit-learn's predict_proba[:, 1] on rows.csv
  onnx_mlp_ort.csv       onnxruntime's probabilities[:, 1] on rows.csv
  onnx_versions.txt      the library versions that made them

CI only reads these files. To remake them:
  pip install numpy scikit-learn skl2onnx onnx onnxruntime xgboost lightgbm shap
  python3 scripts/parity/make_onnx_fixture.py
"""
import numpy as np
import onnx
import onnxruntime
import skl2onnx
import sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from make_fixtures import OUT, simulate, write_predictions


def main():
    rng = np.random.default_rng(11)
    x, y = simulate(20_000, rng)
    rows = np.loadtxt(OUT / "rows.csv", delimiter=",", skiprows=1)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=3),
    )
    model.fit(x, y)
    scaler, mlp = model.steps[0][1], model.steps[-1][1]
    onx = skl2onnx.convert_sklearn(
        model,
        initial_types=[("x", FloatTensorType([None, x.shape[1]]))],
        # Standard ONNX Sub and Div for the scaler, rather than the ai.onnx.ml
        # Scaler operator, which tract does not implement.
        options={id(mlp): {"zipmap": False}, id(scaler): {"div": "div"}},
        target_opset=17,
    )
    (OUT / "onnx_mlp.onnx").write_bytes(onx.SerializeToString())
    write_predictions(OUT / "onnx_mlp_pred.csv", model.predict_proba(rows)[:, 1])
    session = onnxruntime.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"x": rows.astype(np.float32)})[0]
    write_predictions(OUT / "onnx_mlp_ort.csv", probabilities[:, 1])
    (OUT / "onnx_versions.txt").write_text(
        f"scikit-learn {sklearn.__version__}\nskl2onnx {skl2onnx.__version__}\n"
        f"onnx {onnx.__version__}\nonnxruntime {onnxruntime.__version__}\n"
    )


if __name__ == "__main__":
    main()
