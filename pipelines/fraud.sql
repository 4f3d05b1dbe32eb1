-- Features for the fraud model, one row per transaction, derived from the
-- decoded columns of schemas/transaction.json (table `transactions`) and
-- the window features declared in fraud.toml ([windows]), which arrive as
-- columns computed from the card's and terminal's history.
-- The same SQL runs in `streamscore train` and in the stream.
-- Rows must not be filtered, grouped or reordered: every event gets a score.
SELECT
    event_id,
    amount,
    ln(amount + 1.0)                                          AS log_amount,
    CASE WHEN amount > 220.0 THEN 1.0 ELSE 0.0 END            AS amount_over_220,
    CAST(date_part('hour', event_time) AS DOUBLE)             AS hour_of_day,
    CASE WHEN date_part('hour', event_time) < 6 THEN 1.0 ELSE 0.0 END AS is_night,
    CASE WHEN date_part('dow', event_time) IN (0, 6) THEN 1.0 ELSE 0.0 END AS is_weekend,
    CASE WHEN is_online THEN 1.0 ELSE 0.0 END                 AS is_online,
    card_tx_count_1d,
    card_tx_count_7d,
    card_tx_count_30d,
    card_mean_amount_1d,
    card_mean_amount_7d,
    card_mean_amount_30d,
    -- A leaked card's fraudster spends well above the card's habit.
    COALESCE(amount / NULLIF(card_mean_amount_30d, 0.0), 1.0) AS amount_to_card_mean_30d,
    -- The terminal's confirmed frauds per transaction, a label delay ago
    -- (0 where it had no transactions then).
    terminal_tx_count_1d_delayed,
    terminal_tx_count_7d_delayed,
    terminal_tx_count_30d_delayed,
    COALESCE(terminal_fraud_count_1d_delayed / NULLIF(terminal_tx_count_1d_delayed, 0.0), 0.0) AS terminal_risk_1d,
    COALESCE(terminal_fraud_count_7d_delayed / NULLIF(terminal_tx_count_7d_delayed, 0.0), 0.0) AS terminal_risk_7d,
    COALESCE(terminal_fraud_count_30d_delayed / NULLIF(terminal_tx_count_30d_delayed, 0.0), 0.0) AS terminal_risk_30d
FROM transactions
