-- Location service: one row per registered contact (RFC 3261 section 10),
-- with the flow it registered over. Times are microseconds since the epoch.
CREATE TABLE bindings (
    aor         TEXT    NOT NULL,
    binding_key TEXT    NOT NULL,
    uri         TEXT    NOT NULL,
    instance    TEXT    NOT NULL DEFAULT '',
    reg_id      INTEGER NOT NULL DEFAULT 0,
    q           TEXT    NOT NULL DEFAULT '',
    expires_at  INTEGER NOT NULL,
    call_id     TEXT    NOT NULL,
    cseq        INTEGER NOT NULL,
    transport   TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    node        TEXT    NOT NULL,
    user_agent  TEXT    NOT NULL DEFAULT '',
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (aor, binding_key)
);
CREATE INDEX bindings_expiry ON bindings (expires_at);

-- Small server-wide values, such as the secret that signs digest nonces
-- (shared by every node so that any of them accepts another's nonce).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
