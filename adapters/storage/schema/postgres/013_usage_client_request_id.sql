-- Rows read by the id a client sent in `x-request-id` (`client_request_id` on
-- `/v1/requests` and `/v1/admin/requests`): an equality lookup, newest first, without a
-- scan of the window. Partial: rows whose client sent no id (NULL) are not indexed, so
-- a request without one pays nothing for it at insert.
CREATE INDEX usage_client_request_id ON usage (client_request_id, at, id) WHERE client_request_id IS NOT NULL;
