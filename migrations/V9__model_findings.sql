-- Findings made with a prompt, traced to everything that made them: the
-- plugin's hash, the prompt version and its hash, the model, and whether
-- the answer came from the cache. Before storing, the engine checks that a
-- finding names only a prompt version its call looked up (with that
-- version's hash) and a model that answered the call
-- (engine/src/pipeline/provenance.rs), so the join below is to what was used.
CREATE VIEW assay.model_findings AS
SELECT f.run_id, f.document_id, f.source, f.kind,
       f.plugin, f.plugin_version, f.plugin_sha256,
       f.ordinal, f.label, f.score, f.data,
       p.scenario, p.report_type, p.building_type, p.run_part, p.name AS prompt_name,
       v.id AS prompt_version_id, v.version AS prompt_version, v.content_sha256 AS prompt_sha256,
       f.data ->> 'model' AS model,
       CASE jsonb_typeof(f.data -> 'from_cache')
            WHEN 'boolean' THEN (f.data -> 'from_cache')::text::boolean
       END AS from_cache,
       f.started_at
FROM assay.finding_details f
JOIN assay.prompt_versions v
  ON v.id = CASE WHEN f.data ->> 'prompt_version' ~ '^[0-9]{1,18}$'
                 THEN (f.data ->> 'prompt_version')::bigint
            END
JOIN assay.prompts p ON p.id = v.prompt_id;
