-- Inference (contract 0.2): every model request a plugin makes, the token
-- budgets they are counted against, and the cache of deterministic answers.
-- All three are the engine's: plugin roles are granted nothing here, so a
-- plugin can neither read another's traffic nor reset its own budget.

-- One row per request, written as the request ends, through the engine's
-- own connection (not the plugin call's transaction: tokens spent stay
-- spent when the call fails).
CREATE TABLE assay.inference_requests (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    plugin         text NOT NULL CHECK (plugin ~ '^[a-z][a-z0-9_-]{0,49}$'),
    plugin_version text NOT NULL,
    plugin_sha256  text NOT NULL CHECK (plugin_sha256 ~ '^[0-9a-f]{64}$'),
    -- The run the call belonged to. No foreign key: the request is recorded
    -- before its run is stored, and stays recorded if the run never is.
    run_id         uuid,
    kind           text NOT NULL CHECK (kind IN ('complete', 'embed')),
    model          text NOT NULL,
    input_tokens   bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens  bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cached_tokens  bigint NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
    latency_us     bigint NOT NULL CHECK (latency_us >= 0),
    outcome        text NOT NULL CHECK (outcome IN ('ok', 'model_not_allowed', 'budget_exceeded',
                       'timeout', 'unavailable', 'invalid_request', 'bad_response')),
    from_cache     boolean NOT NULL DEFAULT false,
    CHECK (NOT from_cache OR (input_tokens = 0 AND output_tokens = 0))
);
-- Usage per plugin over the last hour and day (plugins list, /healthz).
CREATE INDEX inference_requests_plugin_at_idx ON assay.inference_requests (plugin, at);
CREATE INDEX inference_requests_run_idx ON assay.inference_requests (run_id) WHERE run_id IS NOT NULL;

-- Token budgets per plugin and clock window (UTC hour, UTC day). A request
-- reserves its most possible tokens before it is sent (refused if that would
-- pass the limit) and settles to what the server reported afterwards. Every
-- engine on the database counts against the same rows. A reservation left by
-- an engine that stopped mid-request ends with its window.
CREATE TABLE assay.inference_budgets (
    plugin       text NOT NULL CHECK (plugin ~ '^[a-z][a-z0-9_-]{0,49}$'),
    window_kind  text NOT NULL CHECK (window_kind IN ('hour', 'day')),
    window_start timestamptz NOT NULL,
    used         bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    reserved     bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (plugin, window_kind, window_start)
);

-- Answers to deterministic requests, by the SHA-256 of the request (model,
-- messages, parameters, format).
CREATE TABLE assay.inference_cache (
    key        text PRIMARY KEY CHECK (key ~ '^[0-9a-f]{64}$'),
    model      text NOT NULL,
    answer     jsonb NOT NULL CHECK (jsonb_typeof(answer) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    hits       bigint NOT NULL DEFAULT 0 CHECK (hits >= 0)
);

-- Token totals per plugin outcome of a run.
ALTER TABLE assay.run_plugins
    ADD COLUMN model_requests integer NOT NULL DEFAULT 0 CHECK (model_requests >= 0),
    ADD COLUMN input_tokens   bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    ADD COLUMN output_tokens  bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    ADD COLUMN cached_tokens  bigint NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0);
