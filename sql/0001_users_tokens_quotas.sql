-- Users, roles, API tokens and monthly API quotas (issue 5, item 1).
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL CHECK (char_length(username) BETWEEN 1 AND 64),
    email         text        CHECK (email IS NULL OR char_length(email) <= 254),
    password_hash text        NOT NULL,                -- argon2id, salt and parameters included
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled      boolean     NOT NULL DEFAULT false
);
-- Usernames are unique regardless of case ("Alice" and "alice" are the same person).
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

CREATE TABLE roles (
    name        text PRIMARY KEY,
    description text NOT NULL
);
INSERT INTO roles (name, description) VALUES
    ('admin',  'manage users, tokens and quotas; see every user in the dashboard'),
    ('member', 'use the API and the dashboard with their own tokens');

CREATE TABLE user_roles (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    text   NOT NULL REFERENCES roles (name),
    PRIMARY KEY (user_id, role)
);

-- Only the SHA-256 of a token is stored (tokens are 256-bit random, so a fast hash is safe and
-- lets each request be authenticated with one index lookup); `prefix` is shown to people in clear.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   text        NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    prefix       text        NOT NULL,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

-- A missing row means "the default quota" (MUR_DEFAULT_MONTHLY_QUOTA).
CREATE TABLE quotas (
    user_id       bigint      PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    monthly_limit integer     NOT NULL CHECK (monthly_limit >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per user and UTC calendar month; `count` only grows through consume_quota's upsert.
CREATE TABLE api_usage (
    user_id bigint  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    month   date    NOT NULL CHECK (extract(day FROM month) = 1),
    count   integer NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (user_id, month)
);
