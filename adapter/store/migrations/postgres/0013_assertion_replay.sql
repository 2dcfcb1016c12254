-- SMART Backend Services (issue 22): the `jti` of every client assertion accepted, kept until
-- it expires, so that an assertion is used once, also across processes on one database.
CREATE TABLE assertion_jtis (
    client_id  TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,     -- the assertion's exp (s)
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jtis_expiry ON assertion_jtis (expires_at);

-- Access tokens are no longer signed with a key kept here (auth.signing_key): the old one goes.
DELETE FROM settings WHERE key = 'token_key';
