-- Storing findings is bound by what the server does per stored row. Three
-- things it did that no one needed:
--
-- 1. The foreign key from a finding to its plugin outcome was checked once per
--    row: at 10,000 findings a run, 10,000 look-ups of the same one or few
--    outcomes, and most of the cost of a COPY (BENCHMARKS.md, "Storing
--    findings"). The triggers below keep everything the key kept — a finding
--    belongs to an outcome that exists, deleting an outcome (or its run, or its
--    document) deletes its findings, an outcome with findings keeps its key —
--    but check once per statement, for each distinct outcome the statement
--    wrote, and lock those outcomes as the key did, so a concurrent delete of
--    an outcome waits for the findings being stored under it and then removes
--    them. engine/tests/all/findings.rs holds them to each of these.
--
-- 2. The index on (plugin_version_id, label) served no query: the engine never
--    reads findings back, and reading a run's findings goes by the unique
--    (run_id, plugin_version_id, ordinal) index. An operator who looks findings
--    up by plugin and label across runs can create it again, without blocking
--    the engine: CREATE INDEX CONCURRENTLY ON assay.findings (plugin_version_id, label).
--
-- 3. A surrogate `id` per finding, drawn from a sequence and indexed, named a
--    finding no better than what already did, uniquely: its run, its plugin
--    version and its ordinal in that plugin's answer. That triple is now the
--    primary key, and `finding_details` shows `ordinal` where it showed `id`.
--
-- Together these took the engine's store of 10,000 findings a run from about
-- 96,000 to about 210,000 findings/s here (BENCHMARKS.md has the commands).
--
-- The functions name everything by schema and fix their search_path, so no
-- object of the caller's can stand in for one of assay's.

ALTER TABLE assay.findings DROP CONSTRAINT findings_run_plugin_fkey;
DROP INDEX assay.findings_plugin_label_idx;

DROP VIEW assay.finding_details;
ALTER TABLE assay.findings DROP COLUMN id;
ALTER TABLE assay.findings
    DROP CONSTRAINT findings_run_id_plugin_version_id_ordinal_key,
    ADD CONSTRAINT findings_pkey PRIMARY KEY (run_id, plugin_version_id, ordinal);

CREATE VIEW assay.finding_details AS
SELECT f.run_id, r.document_id, d.source, d.kind,
       p.name AS plugin, p.version AS plugin_version, p.content_sha256 AS plugin_sha256,
       f.ordinal, f.label, f.score, f.span_start, f.span_end,
       CASE WHEN f.span_start IS NOT NULL
            THEN substr(convert_to(r.analyzed_text, 'UTF8'), f.span_start + 1, f.span_end - f.span_start)
       END AS span_bytes,
       f.data, r.started_at
FROM assay.findings f
JOIN assay.runs r ON r.id = f.run_id
JOIN assay.documents d ON d.id = r.document_id
JOIN assay.plugin_versions p ON p.id = f.plugin_version_id;

-- After an INSERT, COPY or UPDATE of findings: every outcome the new rows name
-- must exist. Locking first, then looking, is what makes this safe under
-- READ COMMITTED: an outcome deleted before the lock is not found and the
-- statement fails; one deleted after it waits for this transaction to end.
--
-- The queries go through EXECUTE so that each statement is planned for its
-- own transition table. A plan the session kept from a COPY of thousands of
-- findings (where reading all outcomes at once is cheapest) would otherwise
-- be reused for every later one-row statement, scanning every outcome ever
-- stored; the tests count the scans.
CREATE FUNCTION assay.findings_check_outcomes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    missing record;
    missing_count bigint;
BEGIN
    EXECUTE 'SELECT 1
             FROM assay.run_plugins p
             JOIN (SELECT DISTINCT run_id, plugin_version_id FROM added) a
               ON a.run_id = p.run_id AND a.plugin_version_id = p.plugin_version_id
             FOR KEY SHARE OF p';

    EXECUTE 'SELECT a.run_id, a.plugin_version_id
             FROM (SELECT DISTINCT run_id, plugin_version_id FROM added) a
             WHERE NOT EXISTS (
                 SELECT 1 FROM assay.run_plugins p
                 WHERE p.run_id = a.run_id AND p.plugin_version_id = a.plugin_version_id)
             LIMIT 1' INTO missing;
    GET DIAGNOSTICS missing_count = ROW_COUNT;
    IF missing_count > 0 THEN
        RAISE EXCEPTION 'a finding names a plugin outcome that is not in assay.run_plugins: run % has no outcome of plugin version %',
                missing.run_id, missing.plugin_version_id
            USING ERRCODE = 'foreign_key_violation',
                  TABLE = 'findings', SCHEMA = 'assay',
                  HINT = 'Store the run''s outcome of that plugin (assay.run_plugins) before its findings, in the same transaction.';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER findings_check_outcomes_after_insert
    AFTER INSERT ON assay.findings
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION assay.findings_check_outcomes();
-- (A transition table cannot be combined with UPDATE OF a column list, so every
-- UPDATE is checked; the engine never updates findings.)
CREATE TRIGGER findings_check_outcomes_after_update
    AFTER UPDATE ON assay.findings
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION assay.findings_check_outcomes();

-- Deleting outcomes (directly, or through a deleted run or document) deletes
-- their findings. (EXECUTE for the same reason as above.)
CREATE FUNCTION assay.run_plugins_delete_findings() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE 'DELETE FROM assay.findings f
             USING removed r
             WHERE f.run_id = r.run_id AND f.plugin_version_id = r.plugin_version_id';
    RETURN NULL;
END
$$;

CREATE TRIGGER run_plugins_delete_findings
    AFTER DELETE ON assay.run_plugins
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION assay.run_plugins_delete_findings();

-- An outcome that has findings keeps its key (as ON UPDATE NO ACTION did).
CREATE FUNCTION assay.run_plugins_keep_key_of_findings() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM assay.findings f
               WHERE f.run_id = OLD.run_id AND f.plugin_version_id = OLD.plugin_version_id) THEN
        RAISE EXCEPTION 'the plugin outcome of run % and plugin version % has findings; its key in assay.run_plugins cannot change',
                OLD.run_id, OLD.plugin_version_id
            USING ERRCODE = 'foreign_key_violation',
                  TABLE = 'run_plugins', SCHEMA = 'assay',
                  HINT = 'Delete the outcome (which deletes its findings) and store it anew instead.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER run_plugins_keep_key_of_findings
    BEFORE UPDATE OF run_id, plugin_version_id ON assay.run_plugins
    FOR EACH ROW
    WHEN (OLD.run_id IS DISTINCT FROM NEW.run_id
          OR OLD.plugin_version_id IS DISTINCT FROM NEW.plugin_version_id)
    EXECUTE FUNCTION assay.run_plugins_keep_key_of_findings();

-- TRUNCATE fires no delete triggers: emptying the outcomes empties the findings.
CREATE FUNCTION assay.run_plugins_truncate_findings() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    TRUNCATE assay.findings;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_plugins_truncate_findings
    AFTER TRUNCATE ON assay.run_plugins
    FOR EACH STATEMENT EXECUTE FUNCTION assay.run_plugins_truncate_findings();

-- No one calls these but their triggers, which need no EXECUTE privilege.
REVOKE EXECUTE ON FUNCTION assay.findings_check_outcomes(),
                           assay.run_plugins_delete_findings(),
                           assay.run_plugins_keep_key_of_findings(),
                           assay.run_plugins_truncate_findings() FROM PUBLIC;
