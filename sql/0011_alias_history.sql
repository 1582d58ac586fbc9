-- Every move of a pair's registry alias (issue 37; mur/db/alias_history.py, mur/registry/aliases.py,
-- docs/promotion.md "History and rollback"): the promotion gate's, a live promotion of a shadow, an admin's
-- rollback. MLflow keeps only where the alias points now; this is the memory of who moved it, when (market
-- and wall time), why, and on which scores. Rows are only ever added.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE alias_moves (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pair             text        NOT NULL,
    alias            text        NOT NULL DEFAULT 'champion',
    version          integer     NOT NULL CHECK (version >= 1),
    previous_version integer     CHECK (previous_version >= 1),
    action           text        NOT NULL CHECK (action IN ('gate', 'live', 'rollback', 'manual')),
    actor            text        NOT NULL,
    reason           text        NOT NULL DEFAULT '',
    scores           jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(scores) = 'object'),
    market_time      timestamptz NOT NULL,
    wall_time        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX alias_moves_pair_time_idx ON alias_moves (pair, wall_time DESC, id DESC);
