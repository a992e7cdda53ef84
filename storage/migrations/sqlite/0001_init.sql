-- Accounts: SIP logins with HA1 digests (RFC 2617 MD5, RFC 8760 SHA-256) for
-- the realm they were computed with. Plain passwords are never stored.
CREATE TABLE accounts (
    login        TEXT    PRIMARY KEY,
    display_name TEXT    NOT NULL DEFAULT '',
    realm        TEXT    NOT NULL,
    ha1_md5      TEXT    NOT NULL,
    ha1_sha256   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Times are microseconds since the Unix epoch, UTC; 0 means "none".
CREATE TABLE chat_groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    subject    TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    avatar_at  INTEGER NOT NULL DEFAULT 0,
    video_at   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE members (
    group_id     INTEGER NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    login        TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('w', 'j', 'l')),
    admin        INTEGER NOT NULL DEFAULT 0,
    since        INTEGER NOT NULL,
    PRIMARY KEY (group_id, login)
);
CREATE INDEX members_by_login ON members (login, status);

-- The event log: messages and notifications share one MID sequence.
-- group_id has no foreign key: a deleted group's DG event must outlive it.
CREATE TABLE events (
    mid        INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id   INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    sender     TEXT    NOT NULL,
    sender_dn  TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    ref        INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_group ON events (group_id, mid);

-- One row per event and recipient: the delivery state and the receipts.
-- state: p pending, d done (delivered or confirmed), f failed (refused by
-- every device), x expired. next_at: when to retry; 0 waits for a registration.
CREATE TABLE deliveries (
    mid      INTEGER NOT NULL REFERENCES events (mid) ON DELETE CASCADE,
    login    TEXT    NOT NULL,
    state    TEXT    NOT NULL DEFAULT 'p',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at  INTEGER NOT NULL DEFAULT 0,
    cf_at    INTEGER NOT NULL DEFAULT 0,
    rd_at    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mid, login)
);
CREATE INDEX deliveries_pending ON deliveries (login, mid) WHERE state = 'p';
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'p' AND next_at > 0;

CREATE TABLE media (
    group_id     INTEGER NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    kind         TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    data         BLOB    NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (group_id, kind)
);
