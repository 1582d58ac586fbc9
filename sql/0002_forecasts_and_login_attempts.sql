-- Forecast track record and login rate limiting, for the dashboard.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

-- One row per (pair, model version, target candle); `actual` is filled once that candle has closed.
CREATE TABLE forecasts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pair          text             NOT NULL,
    model_version text             NOT NULL,
    made_at       timestamptz      NOT NULL DEFAULT now(),
    target_time   timestamptz      NOT NULL,
    predicted     double precision NOT NULL,
    last_close    double precision NOT NULL,
    actual        double precision,
    CONSTRAINT forecasts_pair_model_target_key UNIQUE (pair, model_version, target_time)
);
CREATE INDEX forecasts_pair_target_idx ON forecasts (pair, target_time DESC);

CREATE TABLE login_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username     text        NOT NULL,
    ip           text,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    success      boolean     NOT NULL
);
CREATE INDEX login_attempts_username_idx ON login_attempts (lower(username), attempted_at);
CREATE INDEX login_attempts_ip_idx ON login_attempts (ip, attempted_at);
