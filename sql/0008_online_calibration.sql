-- Online calibration of the served ranges (issue 24; mur/evaluation/online_conformal.py, mur/db/calibration.py).
-- One quantile tracker per (pair, horizon, generation): the scale applied at serving to every quantile's
-- distance from the median (log price), its integrator and running counts of the resolved forecasts it saw,
-- with the scale (as served) and without it (the graph's own range). `generation` names the calibration
-- the scale corrects (quantile levels + the offline recipe, mur.db.calibration.generation_for): hourly
-- retrains of the same recipe carry the state over; a new recipe starts fresh at scale 1.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE online_calibration (
    pair              text             NOT NULL,
    horizon_hours     integer          NOT NULL CHECK (horizon_hours >= 1),
    generation        text             NOT NULL,
    level             double precision NOT NULL CHECK (level > 0 AND level < 1),
    log_scale         double precision NOT NULL DEFAULT 0,
    integral          double precision NOT NULL DEFAULT 0,
    resolved          integer          NOT NULL DEFAULT 0 CHECK (resolved >= 0),
    covered           integer          NOT NULL DEFAULT 0 CHECK (covered >= 0 AND covered <= resolved),
    covered_base      integer          NOT NULL DEFAULT 0 CHECK (covered_base >= 0 AND covered_base <= resolved),
    winkler_sum       double precision NOT NULL DEFAULT 0,
    winkler_base_sum  double precision NOT NULL DEFAULT 0,
    last_target_time  timestamptz,
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (pair, horizon_hours, generation)
);

-- Each resolved forecast steps its tracker once: the step's audit row (what it was served with, whether
-- it covered with and without the scale, the scale after the step). Running coverage over any window
-- comes from here.
CREATE TABLE online_calibration_steps (
    forecast_id    bigint           PRIMARY KEY REFERENCES forecasts (id) ON DELETE CASCADE,
    pair           text             NOT NULL,
    horizon_hours  integer          NOT NULL,
    generation     text             NOT NULL,
    target_time    timestamptz      NOT NULL,
    applied_scale  double precision NOT NULL CHECK (applied_scale > 0),
    covered        boolean          NOT NULL,
    covered_base   boolean          NOT NULL,
    scale_after    double precision NOT NULL CHECK (scale_after > 0),
    stepped_at     timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX online_calibration_steps_pair_idx
    ON online_calibration_steps (pair, generation, horizon_hours, target_time);

-- What serving applied to a stored forecast: its range is the graph's times this scale (NULL: scale 1, the
-- graph's range, e.g. a forecast stored before this migration), for this generation's tracker.
ALTER TABLE forecasts
    ADD COLUMN calibration_scale double precision CHECK (calibration_scale IS NULL OR calibration_scale > 0),
    ADD COLUMN calibration_generation text;
