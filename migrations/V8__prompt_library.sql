-- The prompt library: analysis prompts by scenario, report type and building
-- type, each in a numbered run part, every version kept. A prompt is named
-- by those five parts (unique); a changed text is a new version (numbered
-- from 1, unique per prompt), never an overwrite. `assay prompts import`
-- writes here, in one transaction per tree.

CREATE TABLE assay.prompts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scenario      text NOT NULL CHECK (scenario ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    report_type   text NOT NULL CHECK (report_type ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    building_type text NOT NULL CHECK (building_type ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    run_part      integer NOT NULL CHECK (run_part BETWEEN 1 AND 99),
    name          text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scenario, report_type, building_type, run_part, name)
);

CREATE TABLE assay.prompt_versions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt_id      bigint NOT NULL REFERENCES assay.prompts (id) ON DELETE CASCADE,
    version        integer NOT NULL CHECK (version >= 1),
    -- Whether the answer must be JSON (a `.json.txt` file).
    json_answer    boolean NOT NULL,
    text           text NOT NULL CHECK (btrim(text) <> ''),
    -- SHA-256 of the JSON flag and the text, as imported.
    content_sha256 text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    -- Where it was imported from (a path under the imported tree).
    source         text NOT NULL,
    imported_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (prompt_id, version)
);

-- The current version of each prompt: its highest.
CREATE VIEW assay.current_prompts AS
SELECT DISTINCT ON (p.id)
       p.id AS prompt_id, p.scenario, p.report_type, p.building_type, p.run_part, p.name,
       v.id AS version_id, v.version, v.json_answer, v.text, v.content_sha256, v.imported_at
FROM assay.prompts p
JOIN assay.prompt_versions v ON v.prompt_id = p.id
ORDER BY p.id, v.version DESC;
