-- Whether the contact registered from behind a NAT (its Via or Contact did
-- not match where the REGISTER came from): requests then go to the source
-- address instead of the Contact.
ALTER TABLE bindings ADD COLUMN nat BOOLEAN NOT NULL DEFAULT TRUE;
