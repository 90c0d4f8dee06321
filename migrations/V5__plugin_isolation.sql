-- Each plugin's database objects are its alone, and refusals are bounded.

-- Plugin names that differ only in `-` and `_` (`victim-x`, `victim_x`) map to
-- the same schema name (plugin_victim_x). The schema a plugin owns is now
-- recorded with it, and a schema name can belong to one plugin only: the
-- first to claim it keeps it, a later name that maps to it is refused at load.
-- Where two recorded plugins already share one, the one recorded first keeps
-- it; the other has none and is refused at its next load.
ALTER TABLE assay.plugin_roles ADD COLUMN schema_name text;
UPDATE assay.plugin_roles r
SET schema_name = 'plugin_' || replace(r.plugin, '-', '_')
WHERE NOT EXISTS (
    SELECT 1 FROM assay.plugin_roles o
    WHERE replace(o.plugin, '-', '_') = replace(r.plugin, '-', '_')
      AND (o.created_at, o.plugin) < (r.created_at, r.plugin));
ALTER TABLE assay.plugin_roles ADD CONSTRAINT plugin_roles_schema_name_key UNIQUE (schema_name);

-- Taken (LOCK TABLE … IN EXCLUSIVE MODE) by every change to plugin roles,
-- schemas and grants, for the length of that change's transaction: GRANT and
-- REVOKE on shared objects from two transactions at once fail with "tuple
-- concurrently updated". A table lock, not an advisory lock: no plugin role
-- holds any privilege on this table, so no plugin can take it or hold it up,
-- and it ends with its transaction whatever happens to the session.
CREATE TABLE assay.provisioning (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
);

-- Refused plugin files, one row per file and content: the same junk refused
-- again (every start, every `assay plugins list`) counts up `times` instead of
-- adding a row, and the engine keeps only the most recent refusals, so a
-- directory full of junk cannot grow the history without bound.
CREATE TABLE assay.plugin_refusals (
    source         text NOT NULL,
    content_sha256 text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    size           bigint NOT NULL CHECK (size >= 0),
    error          text NOT NULL,
    first_at       timestamptz NOT NULL DEFAULT now(),
    last_at        timestamptz NOT NULL DEFAULT now(),
    times          bigint NOT NULL DEFAULT 1 CHECK (times > 0),
    PRIMARY KEY (source, content_sha256)
);
CREATE INDEX plugin_refusals_last_idx ON assay.plugin_refusals (last_at DESC);

INSERT INTO assay.plugin_refusals (source, content_sha256, size, error, first_at, last_at, times)
SELECT source, content_sha256, max(size), (array_agg(error ORDER BY id DESC))[1], min(at), max(at), count(*)
FROM assay.plugin_loads WHERE outcome = 'refused'
GROUP BY source, content_sha256;
DELETE FROM assay.plugin_loads WHERE outcome = 'refused';

-- `assay.plugin_state` is no longer where plugins keep state: each plugin's
-- state now lives in its own schema (`plugin_<name>.assay_state`), so one
-- plugin can never lock, fill or slow down the table another one needs.
-- Rows still here move to the plugin's own table at its next load.
COMMENT ON TABLE assay.plugin_state IS
    'Legacy: plugin state before V5. Each plugin''s rows move to plugin_<name>.assay_state at its next load.';
