-- An account an admin has disabled: its sessions are refused on the next request and it
-- cannot sign in until enabled again.
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;

-- What an address looks like on screen (the confusable skeleton of Unicode's UTS #39,
-- computed by the service): unique, so a look-alike of an account cannot be signed up.
-- Existing accounts get theirs when the service starts; NULLs never collide.
ALTER TABLE users ADD COLUMN email_key TEXT;
CREATE UNIQUE INDEX users_email_look_alike ON users (email_key);
