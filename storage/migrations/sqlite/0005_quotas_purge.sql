-- Quotas per account (chat.max_pending_per_sender): a delivery of an
-- unsolicited event (NG, DG, a stored direct message) to someone other than
-- its sender names the sender, so that what one account has waiting for
-- another is counted from an index, however long the recipient's backlog.
ALTER TABLE deliveries ADD COLUMN sender TEXT NOT NULL DEFAULT '';
UPDATE deliveries SET sender = e.sender FROM events e
    WHERE e.mid = deliveries.mid AND deliveries.state = 'p'
      AND e.kind IN ('NG', 'DG', 'DIR') AND deliveries.login <> e.sender;
CREATE INDEX deliveries_by_sender ON deliveries (sender, login) WHERE state = 'p' AND sender <> '';

-- Groups created per account (chat.max_groups_per_hour), kept apart from
-- chat_groups so that deleting a group does not give the quota back.
CREATE TABLE group_creations (
    login      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX group_creations_by_login ON group_creations (login, created_at);

-- A deleted group leaves only its DG event until every member has it; the
-- purge finds those here.
CREATE INDEX events_deleted_group ON events (mid) WHERE kind = 'DG';

-- The history of groups deleted before this version goes now. Their DG
-- events stay for the purge.
DELETE FROM events WHERE group_id <> 0 AND kind <> 'DG'
    AND group_id NOT IN (SELECT id FROM chat_groups);
