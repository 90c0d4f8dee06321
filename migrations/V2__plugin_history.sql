-- Every plugin version that ever loaded keeps its bytes (content-addressed), so
-- an operator can roll back to it even after its file is gone; and every load
-- attempt, successful or refused, is recorded.

CREATE TABLE assay.plugin_blobs (
    content_sha256 text PRIMARY KEY CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    bytes          bytea NOT NULL,
    size           integer NOT NULL CHECK (size = octet_length(bytes)),
    stored_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE assay.plugin_loads (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL when the component could not even say its name (garbage, wrong world).
    name           text CHECK (name ~ '^[a-z][a-z0-9_-]{0,49}$'),
    version        text,
    content_sha256 text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    size           integer NOT NULL CHECK (size >= 0),
    source         text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('loaded', 'refused', 'unloaded')),
    error          text,
    at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'refused') = (error IS NOT NULL)),
    CHECK (outcome = 'refused' OR name IS NOT NULL)
);
CREATE INDEX plugin_loads_name_idx ON assay.plugin_loads (name, at DESC);
