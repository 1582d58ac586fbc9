-- Versioned model configurations per pair (issue 24: `mur tune`, mur/db/model_configs.py). A Ray Tune search
-- stores the configuration it chose (hyper-parameters as Settings field names, e.g. {"arch": "gru",
-- "hidden_size": 64, ...}) with its evidence: the search's MLflow parent run, and the comparison with the
-- default on the confirmation span the search never saw. At most one version per pair is active: scheduled
-- training applies it on top of the settings (mur/training/tuned.py); no active version = the settings'
-- defaults. Versions are never updated except for `active`, so every trained model's config stays readable.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE model_configs (
    pair           text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    config         jsonb       NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    active         boolean     NOT NULL DEFAULT false,
    search_id      text,
    mlflow_run_id  text,
    evidence       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pair, version)
);

-- one active configuration per pair at most
CREATE UNIQUE INDEX model_configs_one_active ON model_configs (pair) WHERE active;
