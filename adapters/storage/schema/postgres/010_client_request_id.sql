-- The client's own `x-request-id` (server/requestid.py: 1 to 128 characters of
-- A-Z a-z 0-9 . _ : -), kept on its ledger row so the row, the request's log line and its
-- span can be found by the id the client knows. NULL when the client sent none (the
-- row's `request_id` is then the id it was shown).
ALTER TABLE usage ADD COLUMN client_request_id TEXT;
