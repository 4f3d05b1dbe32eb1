"""The Python peers on exactly the engine's features of the handbook protocol.

`STREAMSCORE_QUALITY_EXPORT=DIR cargo test --test it -- quality::models
--nocapture` writes DIR/train.csv and DIR/test.csv (the 15 features as the
example pipeline computes them, the label, the card and the event time);
`python3 scripts/parity/quality_peers.py DIR` fits scikit-learn's logistic
regression and random forest and XGBoost on them and prints AUC, average
precision and the handbook's card precision@100 (cards found on a day are
left out of later days), so the engine's kinds and the peers are compared on
the same rows.
"""
import sys

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DAY_MS = 86_400_000


def card_precision_top_k(test, scores, k=100):
    """The handbook's card_precision_top_k, with detected cards removed."""
    df = pd.DataFrame({"card": test.card_id, "day": test.event_time // DAY_MS,
                       "p": scores, "fraud": test.is_fraud})
    detected, values = set(), []
    for _, day in sorted(df.groupby("day"), key=lambda d: d[0]):
        day = day[~day.card.isin(detected)]
        cards = day.groupby("card").max().sort_values("p", ascending=False).head(k)
        found = list(cards[cards.fraud == 1].index)
        values.append(len(found) / k)
        detected.update(found)
    return float(np.mean(values))


def main(directory):
    train = pd.read_csv(f"{directory}/train.csv")
    test = pd.read_csv(f"{directory}/test.csv")
    features = [c for c in train.columns if c not in ("is_fraud", "card_id", "event_time")]
    models = {
        "scikit-learn logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "scikit-learn random forest (100 trees, depth 20)": RandomForestClassifier(
            n_estimators=100, max_depth=20, random_state=0, n_jobs=-1),
        "scikit-learn random forest (100 trees, unlimited)": RandomForestClassifier(
            n_estimators=100, random_state=0, n_jobs=-1),
    }
    try:
        import xgboost
        models["XGBoost (100 trees, depth 6)"] = xgboost.XGBClassifier(
            n_estimators=100, max_depth=6, learning_rate=0.1, random_state=0)
    except ImportError:
        pass
    for name, model in models.items():
        model.fit(train[features], train.is_fraud)
        p = model.predict_proba(test[features])[:, 1]
        print(f"{name}: AUC {roc_auc_score(test.is_fraud, p):.3f}, "
              f"AP {average_precision_score(test.is_fraud, p):.3f}, "
              f"card precision@100 {card_precision_top_k(test, p):.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
