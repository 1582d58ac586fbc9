-- Pairs added by an admin (issue 25; mur/db/pairs.py, mur/data/catalogue.py, docs/data.md "Pairs added by an
-- admin"). The pair catalogue is the configured pairs (MUR_PAIRS) plus the active rows here, minus the
-- removed ones. Removing a pair only marks its row (active = false): its forecasts, track record, registered
-- versions and uploaded candles stay. A pair added from a CSV has its hourly candles in `pair_candles`: in
-- the database every process that reads market data already connects to (the Ray training job, Serve's
-- market cache, Airflow's tasks, the dashboard), on any machine.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE pairs (
    pair        text        PRIMARY KEY CHECK (pair ~ '^[a-z0-9]{2,20}_[a-z0-9]{2,10}$'),
    source      text        NOT NULL CHECK (source IN ('exchange', 'csv', 'configured')),
    symbol      text,
    active      boolean     NOT NULL DEFAULT true,
    candles     integer     NOT NULL DEFAULT 0 CHECK (candles >= 0),
    first_open  timestamptz,
    last_open   timestamptz,
    added_by    text,
    added_at    timestamptz NOT NULL DEFAULT now(),
    removed_by  text,
    removed_at  timestamptz,
    CHECK (active OR removed_at IS NOT NULL),
    CHECK (source <> 'csv' OR (candles > 0 AND first_open IS NOT NULL AND last_open >= first_open))
);

-- An uploaded pair's candles, one row per open time (Binance's kline fields). The primary key keeps one
-- candle an hour; the CHECKs keep the prices usable (the upload validated the rest).
CREATE TABLE pair_candles (
    pair         text             NOT NULL REFERENCES pairs (pair) ON DELETE CASCADE,
    open_time    timestamptz      NOT NULL
                                  CHECK (date_trunc('hour', open_time AT TIME ZONE 'UTC') = open_time AT TIME ZONE 'UTC'),
    open         double precision NOT NULL CHECK (open > 0),
    high         double precision NOT NULL CHECK (high > 0),
    low          double precision NOT NULL CHECK (low > 0),
    close        double precision NOT NULL CHECK (close > 0),
    volume       double precision NOT NULL,
    close_time   timestamptz      NOT NULL,
    quote_av     double precision NOT NULL DEFAULT 0,
    trades       bigint           NOT NULL DEFAULT 0,
    tb_base_av   double precision NOT NULL DEFAULT 0,
    tb_quote_av  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (pair, open_time)
);
