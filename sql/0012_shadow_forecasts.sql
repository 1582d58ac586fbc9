-- Shadow forecasts (issue 37; mur/db/forecasts.py, mur/monitoring/shadows.py, docs/promotion.md "Shadows"):
-- what a version served in shadow would have answered for each target hour and horizon, computed beside the
-- champion's served forecast, never returned or charged. Kept apart from `forecasts` so that nothing that
-- scores, calibrates or alerts on the served track record can ever read a shadow row. One row per
-- (pair, version, target, horizon): the first one computed is the one scored; the outcome is the served
-- track record's (`scored_forecasts.actual` of the same target and horizon).
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE shadow_forecasts (
    pair          text             NOT NULL,
    model_version integer          NOT NULL CHECK (model_version >= 1),
    target_time   timestamptz      NOT NULL,
    horizon_hours integer          NOT NULL CHECK (horizon_hours >= 1),
    made_at       timestamptz      NOT NULL,
    predicted     double precision NOT NULL,
    lower         double precision NOT NULL,
    upper         double precision NOT NULL CHECK (lower <= upper),
    level         double precision NOT NULL CHECK (level > 0 AND level < 1),
    last_close    double precision NOT NULL,
    PRIMARY KEY (pair, model_version, target_time, horizon_hours)
);
