-- Events written with the change they announce, published by the relay.
CREATE TABLE event_outbox (
    id uuid PRIMARY KEY,
    type text NOT NULL,
    source text NOT NULL,
    data jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    published_at timestamptz
);
CREATE INDEX event_outbox_pending ON event_outbox (occurred_at) WHERE published_at IS NULL;
