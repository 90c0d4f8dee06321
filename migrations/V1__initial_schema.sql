-- assay's own schema. Everything the engine stores lives in the `assay` schema.
-- Requires PostgreSQL 14 or newer (gen_random_uuid is built in since 13).

CREATE SCHEMA IF NOT EXISTS assay;

-- A document as it was given to `assay analyze` (or POSTed to the service).
-- The same content from the same source is one document, analysed by many runs.
CREATE TABLE assay.documents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source         text NOT NULL CHECK (source <> ''),
    kind           text NOT NULL CHECK (kind ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    metadata       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    text           text NOT NULL,
    content_sha256 text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, content_sha256)
);
-- Metadata look-ups such as `metadata @> '{"group": "acme"}'`.
CREATE INDEX documents_metadata_idx ON assay.documents USING gin (metadata jsonb_path_ops);
CREATE INDEX documents_kind_seen_idx ON assay.documents (kind, last_seen_at DESC);

-- Every plugin version that took part in a run, identified by the hash of its
-- component bytes, so a finding can always be traced to the exact code behind it.
CREATE TABLE assay.plugin_versions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,49}$'),
    version        text NOT NULL,
    content_sha256 text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    stage          text NOT NULL CHECK (stage IN ('prompt', 'analysis')),
    first_loaded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, content_sha256)
);

-- One pass of the pipeline over one document.
CREATE TABLE assay.runs (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id   uuid NOT NULL REFERENCES assay.documents (id) ON DELETE CASCADE,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN ('ok', 'partial')),
    -- The text after the prompt stage: spans of analysis findings index into it.
    analyzed_text text NOT NULL,
    CHECK (finished_at >= started_at)
);
CREATE INDEX runs_document_idx ON assay.runs (document_id, started_at DESC);
CREATE INDEX runs_started_idx ON assay.runs (started_at DESC);

-- What each plugin did in a run: ran, failed (and why), or was skipped.
CREATE TABLE assay.run_plugins (
    run_id            uuid NOT NULL REFERENCES assay.runs (id) ON DELETE CASCADE,
    plugin_version_id bigint NOT NULL REFERENCES assay.plugin_versions (id),
    stage             text NOT NULL CHECK (stage IN ('prompt', 'analysis')),
    outcome           text NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped')),
    error_kind        text CHECK (error_kind IN ('invalid-input', 'failed', 'trap', 'timeout', 'invalid-output')),
    error_message     text,
    duration_us       bigint NOT NULL CHECK (duration_us >= 0),
    findings          integer NOT NULL DEFAULT 0 CHECK (findings >= 0),
    PRIMARY KEY (run_id, plugin_version_id),
    CHECK ((outcome = 'failed') = (error_kind IS NOT NULL))
);
CREATE INDEX run_plugins_failed_idx ON assay.run_plugins (plugin_version_id) WHERE outcome = 'failed';

CREATE TABLE assay.findings (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES assay.runs (id) ON DELETE CASCADE,
    plugin_version_id bigint NOT NULL REFERENCES assay.plugin_versions (id),
    ordinal           integer NOT NULL CHECK (ordinal >= 0),
    label             text NOT NULL CHECK (label <> ''),
    score             double precision CHECK (score IS NULL OR score = score), -- no NaN
    span_start        integer CHECK (span_start >= 0),
    span_end          integer,
    data              jsonb NOT NULL DEFAULT '{}',
    CHECK ((span_start IS NULL) = (span_end IS NULL)),
    CHECK (span_end >= span_start),
    UNIQUE (run_id, plugin_version_id, ordinal)
);
CREATE INDEX findings_plugin_label_idx ON assay.findings (plugin_version_id, label);

-- Findings with the plugin that produced them spelled out, for people and reports.
CREATE VIEW assay.finding_details AS
SELECT f.id, f.run_id, r.document_id, d.source, d.kind,
       p.name AS plugin, p.version AS plugin_version, p.content_sha256 AS plugin_sha256,
       f.label, f.score, f.span_start, f.span_end,
       CASE WHEN f.span_start IS NOT NULL
            THEN substr(convert_to(r.analyzed_text, 'UTF8'), f.span_start + 1, f.span_end - f.span_start)
       END AS span_bytes,
       f.data, r.started_at
FROM assay.findings f
JOIN assay.runs r ON r.id = f.run_id
JOIN assay.documents d ON d.id = r.document_id
JOIN assay.plugin_versions p ON p.id = f.plugin_version_id;

-- Per-plugin state (the `state` interface): JSON values by (scope, key).
-- Plugin calls reach it on their own connection, as their own role; row-level
-- security lets a role see and write only the rows of its own plugin. Plugin
-- roles are named assay_<first 6 hex digits of md5(database name)>_<plugin>, so
-- several assay databases on one server never share a role.
CREATE TABLE assay.plugin_state (
    plugin     text NOT NULL CHECK (plugin ~ '^[a-z][a-z0-9_-]{0,49}$'),
    scope      text NOT NULL CHECK (length(scope) BETWEEN 1 AND 256),
    key        text NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, scope, key)
);
ALTER TABLE assay.plugin_state ENABLE ROW LEVEL SECURITY;
CREATE POLICY plugin_state_own_rows ON assay.plugin_state
    USING (current_user = 'assay_' || substr(md5(current_database()), 1, 6) || '_' || plugin)
    WITH CHECK (current_user = 'assay_' || substr(md5(current_database()), 1, 6) || '_' || plugin);

-- The database role of each plugin and its password. Only the engine's role
-- (and superusers) can read this table: no plugin role is ever granted it.
CREATE TABLE assay.plugin_roles (
    plugin     text PRIMARY KEY CHECK (plugin ~ '^[a-z][a-z0-9_-]{0,49}$'),
    role_name  text NOT NULL UNIQUE,
    password   text NOT NULL CHECK (length(password) >= 24),
    created_at timestamptz NOT NULL DEFAULT now(),
    dropped_at timestamptz
);
