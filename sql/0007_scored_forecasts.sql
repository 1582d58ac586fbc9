-- One forecast, one score (issue 25): the forecast of a (pair, target time, horizon) that the track record
-- scores is the FIRST one served for it (earliest made_at, then the lowest id), with its model version.
-- Other versions that forecast the same target later stay in `forecasts` (what each version said) but are
-- never counted: the dashboard, the monitoring task, /metrics and the API all read this one view
-- (mur/db/forecasts.py: scored_forecasts, scored_counts).
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE VIEW scored_forecasts AS
SELECT DISTINCT ON (pair, target_time, horizon_hours)
       id, pair, model_version, made_at, target_time, predicted, last_close, actual, horizon_hours, lower,
       upper, level
FROM forecasts
ORDER BY pair, target_time, horizon_hours, made_at, id;

-- What the view's DISTINCT ON reads in order, per pair (a filter on pair / target_time / horizon_hours is
-- pushed below the DISTINCT ON).
CREATE INDEX forecasts_scored_idx ON forecasts (pair, target_time, horizon_hours, made_at, id);
