-- A finding belongs to one plugin's outcome in one run. One foreign key to
-- that outcome says so more precisely than the two it replaces (to the run,
-- and to the plugin version, which the outcome already references), and the
-- server checks one key per stored finding instead of two: storing findings
-- is bound by these per-row checks (see BENCHMARKS.md). Deleting a run still
-- deletes its findings, through its plugin outcomes.
ALTER TABLE assay.findings
    DROP CONSTRAINT findings_run_id_fkey,
    DROP CONSTRAINT findings_plugin_version_id_fkey,
    ADD CONSTRAINT findings_run_plugin_fkey FOREIGN KEY (run_id, plugin_version_id)
        REFERENCES assay.run_plugins (run_id, plugin_version_id) ON DELETE CASCADE;
