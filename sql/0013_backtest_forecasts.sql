-- Backtest track record (issue 40; mur/monitoring/backtest_record.py, docs/monitoring.md "Backtest track
-- record"): each champion's out-of-sample forecasts of its own test span, made through its ONNX graph when it
-- was promoted, so that a new stack has evidence before its first live forecast resolves. Kept apart from
-- `forecasts` so that nothing that scores, calibrates, monitors or alerts on the served track record can ever
-- read a backtest row; only the views labelled "backtest" read it. Every row is resolved (`actual` is the
-- close that happened). One row per (pair, version, target, horizon); a reload changes nothing.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

-- The columns, checks and primary key of `shadow_forecasts` (sql/0012_shadow_forecasts.sql), and the outcome.
CREATE TABLE backtest_forecasts (
    LIKE shadow_forecasts INCLUDING ALL,
    id        bigint           GENERATED ALWAYS AS IDENTITY,
    actual    double precision NOT NULL,
    loaded_at timestamptz      NOT NULL DEFAULT now()
);
