-- Forecast track record per horizon: a forecast made at one hour stores one row per horizon (1 h, 4 h,
-- 24 h, ...) with the median in `predicted` and its range [lower, upper] of nominal coverage `level`.
-- Rows written before this migration are 1 h point forecasts without a range.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

ALTER TABLE forecasts
    ADD COLUMN horizon_hours integer NOT NULL DEFAULT 1 CHECK (horizon_hours >= 1),
    ADD COLUMN lower double precision,
    ADD COLUMN upper double precision,
    ADD COLUMN level double precision CHECK (level IS NULL OR (level > 0 AND level < 1)),
    ADD CONSTRAINT forecasts_range_ordered CHECK (lower IS NULL OR upper IS NULL OR lower <= upper);

ALTER TABLE forecasts DROP CONSTRAINT forecasts_pair_model_target_key;
ALTER TABLE forecasts
    ADD CONSTRAINT forecasts_pair_model_target_key UNIQUE (pair, model_version, target_time, horizon_hours);
