-- Calls can now also fail for lack of memory, for lack of a free slot
-- (overloaded), and because the database went away.
ALTER TABLE assay.run_plugins DROP CONSTRAINT run_plugins_error_kind_check;
ALTER TABLE assay.run_plugins ADD CONSTRAINT run_plugins_error_kind_check
    CHECK (error_kind IN ('invalid-input', 'failed', 'trap', 'timeout', 'memory',
                          'overloaded', 'database', 'invalid-output'));
