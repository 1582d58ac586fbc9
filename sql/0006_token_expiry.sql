-- Optional API token expiry (`mur tokens create USER --expires-in 90d`, the dashboard's API page).
-- A token whose `expires_at` has passed is refused with a 401 `token_expired`; NULL: it never expires.
-- Idempotent, like the other files; never edit it once applied anywhere: add a new numbered migration.

ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'api_tokens_expires_after_creation') THEN
        ALTER TABLE api_tokens
            ADD CONSTRAINT api_tokens_expires_after_creation CHECK (expires_at IS NULL OR expires_at > created_at);
    END IF;
END
$$;
