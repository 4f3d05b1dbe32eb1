#!/usr/bin/env python3
"""NannyML's confidence-based performance estimation (CBPE) on the engine's
own simulated scores, the reference for src/drift/performance.rs.

The Rust test `quality::estimated_performance_follows_the_realised_before_
the_labels_arrive` writes its data when asked:

  STREAMSCORE_CBPE_EXPORT=/tmp/cbpe cargo test --test it -- quality::estimated_performance
  pip install nannyml statsmodels
  python3 scripts/parity/cbpe_nannyml.py /tmp/cbpe

- reference.csv: the evaluated (out-of-fold) scores of the training
  period, their labels and decisions: what the engine's reliability curve
  is fitted on, and what NannyML calibrates on (isotonic regression);
- analysis.csv: the 30 test days' scores, labels and decisions.

Writes tests/fixtures/cbpe/nannyml.json: NannyML's estimated AUC and
average precision per day. CI only reads it; the test compares its own
daily estimates with these.
"""
import json
import pathlib
import sys

import nannyml
import pandas as pd

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "cbpe"


def main(data):
    data = pathlib.Path(data)
    reference = pd.read_csv(data / "reference.csv")
    analysis = pd.read_csv(data / "analysis.csv")
    for frame in (reference, analysis):
        frame["time"] = pd.to_datetime(frame["time_ms"], unit="ms")
    estimator = nannyml.CBPE(
        metrics=["roc_auc", "average_precision"],
        y_pred_proba="score",
        y_pred="flagged",
        y_true="is_fraud",
        problem_type="classification_binary",
        timestamp_column_name="time",
        chunk_period="D",
    )
    estimator.fit(reference)
    result = estimator.estimate(analysis).to_df()
    days = {}
    for _, row in result.iterrows():
        if row[("chunk", "period")] != "analysis":
            continue
        start = row[("chunk", "start_date")]
        day = int(pd.Timestamp(start).value // 10**6 // 86_400_000)
        days[str(day)] = {
            "auc": float(row[("roc_auc", "value")]),
            "average_precision": float(row[("average_precision", "value")]),
        }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "nannyml.json").write_text(
        json.dumps({"nannyml": nannyml.__version__, "days": days}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1])
