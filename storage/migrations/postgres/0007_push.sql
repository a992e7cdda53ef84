-- Push notification parameters of a binding (RFC 8599): the device's push
-- service (pn-provider), its address there (pn-prid) and what the service
-- needs besides (pn-param), as the phone registered them; '' when none.
ALTER TABLE bindings ADD COLUMN pn_provider TEXT NOT NULL DEFAULT '';
ALTER TABLE bindings ADD COLUMN pn_prid TEXT NOT NULL DEFAULT '';
ALTER TABLE bindings ADD COLUMN pn_param TEXT NOT NULL DEFAULT '';
