-- The activity worker's inbox: every event it handled, once (a redelivered message finds its id here and
-- changes nothing), and the counts its handling keeps, in the same transaction.
CREATE TABLE handled (
    event_id uuid PRIMARY KEY,
    type text NOT NULL,
    source text NOT NULL,
    handled_by text NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE counts (
    type text PRIMARY KEY,
    n bigint NOT NULL
);
