-- The device a message came from (so that copies to the sender's other
-- devices skip it) and the content type of direct messages stored for
-- offline users.
ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN content_type TEXT NOT NULL DEFAULT 'text/plain';
-- Direct (1:1) messages have no group; they are found by recipient.
