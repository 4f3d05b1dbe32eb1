#!/usr/bin/env python3
"""Fixtures for the imported-model parity tests (tests/it/imported.rs).

Trains small XGBoost and LightGBM binary classifiers on simulated
transactions and writes, into tests/fixtures/imported/:
  rows.csv             1,000 feature rows (a header, then one row per line)
  xgboost.json         the XGBoost model, save_model("...json"), binary:logistic
  xgboost_pred.csv     XGBoost's predict_proba[:, 1] on rows.csv, repr floats
  lightgbm.txt         the LightGBM model, save_model (text), objective binary
  lightgbm_pred.csv    LightGBM's predict on rows.csv
  xgboost_shap.csv     shap.TreeExplainer (path-dependent) values of the
  lightgbm_shap.csv    first 100 rows, in log-odds, one row per line
  xgboost_100x6.json   a 100-tree, depth-6 XGBoost model for benches/trees.rs
  xgboost_timing.txt   XGBoost's own predict on rows.csv, one thread: ns per row
  versions.txt         the library versions that made them

CI only reads these files; it needs no Python. To remake them:
  pip install numpy xgboost lightgbm shap
  python3 scripts/parity/make_fixtures.py
"""
import pathlib

import numpy as np
import lightgbm
import shap
import xgboost

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "imported"
FEATURES = ["amount", "log_amount", "hour_of_day", "is_night", "is_online"]


def simulate(n, rng):
    amount = rng.gamma(2.0, 40.0, n)
    hour = rng.integers(0, 24, n).astype(float)
    online = (rng.random(n) < 0.3).astype(float)
    x = np.column_stack([amount, np.log1p(amount), hour, (hour < 6).astype(float), online])
    logit = -4.0 + 0.012 * amount + 1.2 * x[:, 3] + 0.8 * online
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return x, y


def main():
    rng = np.random.default_rng(7)
    x, y = simulate(20_000, rng)
    rows, _ = simulate(1_000, rng)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savetxt(OUT / "rows.csv", rows, delimiter=",", header=",".join(FEATURES), comments="", fmt="%.17g")

    xgb = xgboost.XGBClassifier(n_estimators=40, max_depth=4, learning_rate=0.2, objective="binary:logistic")
    xgb.fit(x, y)
    xgb.save_model(OUT / "xgboost.json")
    write_predictions(OUT / "xgboost_pred.csv", xgb.predict_proba(rows)[:, 1])

    lgb = lightgbm.LGBMClassifier(n_estimators=40, num_leaves=15, learning_rate=0.2, verbose=-1)
    lgb.fit(x, y)
    lgb.booster_.save_model(OUT / "lightgbm.txt")
    write_predictions(OUT / "lightgbm_pred.csv", lgb.predict_proba(rows)[:, 1])

    big = xgboost.XGBClassifier(n_estimators=100, max_depth=6, learning_rate=0.1, n_jobs=1)
    big.fit(x, y)
    big.save_model(OUT / "xgboost_100x6.json")
    (OUT / "xgboost_timing.txt").write_text(predict_timing(big.get_booster(), rows))

    for name, model in [("xgboost", xgb), ("lightgbm", lgb)]:
        values = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent").shap_values(rows[:100])
        np.savetxt(OUT / f"{name}_shap.csv", np.asarray(values), delimiter=",", fmt="%.17g")

    (OUT / "versions.txt").write_text(
        f"numpy {np.__version__}\nxgboost {xgboost.__version__}\nlightgbm {lightgbm.__version__}\n"
        f"shap {shap.__version__}\n"
    )


def predict_timing(booster, rows):
    """XGBoost's own predict of the 1,000 rows on one thread: the median of
    200 calls, in ns per row, for the bench to compare against."""
    import time

    booster.set_param({"nthread": 1})
    matrix = np.ascontiguousarray(rows, dtype=np.float32)
    for _ in range(20):
        booster.inplace_predict(matrix)
    times = []
    for _ in range(200):
        start = time.perf_counter_ns()
        booster.inplace_predict(matrix)
        times.append(time.perf_counter_ns() - start)
    times.sort()
    per_row = times[len(times) // 2] / len(rows)
    return (
        f"xgboost {xgboost.__version__} inplace_predict, 1 thread, {len(rows)} rows, "
        f"median of 200: {per_row:.1f} ns per row\n"
    )


def write_predictions(path, values):
    path.write_text("".join(f"{float(v)!r}\n" for v in values))


if __name__ == "__main__":
    main()
