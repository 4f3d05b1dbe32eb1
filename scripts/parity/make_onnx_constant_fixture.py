#!/usr/bin/env python3
"""A hostile ONNX fixture for the import tests (tests/it/imported.rs).

`onnx_one_row.onnx` takes `x` (float32, N x 5) and answers `probabilities`
of shape 1 x 2 whatever N is (the sigmoid of the column means): right on a
one-row probe, one value short of every row on a batch. At a342126 it
passed the load and then indexed out of range in the scoring loop.

CI only reads the file. To remake it:
  pip install onnx
  python3 scripts/parity/make_onnx_constant_fixture.py
"""
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "imported"


def main():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    keep = helper.make_tensor("keep", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["means"], keepdims=1),
        helper.make_node("Slice", ["means", "zero", "keep", "one"], ["two"]),
        helper.make_node("Sigmoid", ["two"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "one_row",
        [x],
        [probabilities],
        initializer=[
            axes,
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            keep,
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, OUT / "onnx_one_row.onnx")


if __name__ == "__main__":
    main()
