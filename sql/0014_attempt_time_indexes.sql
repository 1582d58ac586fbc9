-- The rate limits' pruning (mur/db/logins.py `_prune`) deletes attempts older than the window on every
-- recorded one; the existing indexes lead with the username or IP, so it scanned the whole table.
-- Never edit this file once applied anywhere: add a new numbered migration instead.

CREATE INDEX login_attempts_attempted_at_idx ON login_attempts (attempted_at);
CREATE INDEX registration_attempts_attempted_at_idx ON registration_attempts (attempted_at);
