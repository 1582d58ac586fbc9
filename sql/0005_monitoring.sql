-- Monitoring: per pair, what the hourly monitoring task found (rolling skill and coverage of the resolved
-- forecasts, input drift against the champion's training window) and the alerts it raised.
-- `as_of` is market time (the market clock, mur/clock.py); `computed_at` is wall time.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE monitoring_reports (
    id               bigserial PRIMARY KEY,
    pair             text             NOT NULL,
    as_of            timestamptz      NOT NULL,
    computed_at      timestamptz      NOT NULL DEFAULT now(),
    champion_version text,
    status           text             NOT NULL CHECK (status IN ('ok', 'alert', 'insufficient_data')),
    n_resolved       integer          NOT NULL DEFAULT 0 CHECK (n_resolved >= 0),
    skill            double precision,
    coverage         double precision CHECK (coverage IS NULL OR (coverage >= 0 AND coverage <= 1)),
    report           jsonb            NOT NULL,
    CONSTRAINT monitoring_reports_pair_as_of_key UNIQUE (pair, as_of)
);
CREATE INDEX monitoring_reports_pair_latest ON monitoring_reports (pair, as_of DESC);

CREATE TABLE monitoring_alerts (
    id              bigserial PRIMARY KEY,
    pair            text        NOT NULL,
    as_of           timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    kinds           text[]      NOT NULL,
    message         text        NOT NULL,
    delivered       boolean     NOT NULL DEFAULT false,
    retrain_run_id  text
);
CREATE INDEX monitoring_alerts_pair_latest ON monitoring_alerts (pair, as_of DESC);
