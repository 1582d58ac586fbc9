-- Server-side logout, invite-only registration and the registration rate limit (issue 16, items 10 and 12).
-- Never edit this file once applied anywhere: add a new numbered migration instead.

-- A dashboard session carries the generation it was made in; logging out (or a new password) bumps it,
-- so every older session cookie of the user stops working.
ALTER TABLE users ADD COLUMN session_generation integer NOT NULL DEFAULT 0;

-- Single-use invitations to register (MUR_REGISTRATION=invite). Only the SHA-256 of a code is stored.
CREATE TABLE invites (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_hash  text        NOT NULL UNIQUE CHECK (code_hash ~ '^[0-9a-f]{64}$'),
    created_by bigint      REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_by    bigint      REFERENCES users (id) ON DELETE SET NULL,
    used_at    timestamptz
);

CREATE TABLE registration_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ip           text,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registration_attempts_ip_idx ON registration_attempts (ip, attempted_at);
