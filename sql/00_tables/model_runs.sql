-- One row per `stellardb train` or `stellardb score` run: what ran, on which model, when,
-- and the library versions that ran it, so every stored prediction and metric can be
-- traced to the code and the model card that made it.
create table if not exists model_runs (
    command varchar not null,     -- train | score
    model varchar not null,       -- model name (folder under the models directory)
    run_at timestamp not null,    -- UTC; equals predictions.scored_at / model_metrics.trained_at
    stars bigint not null,        -- stars scored, or labelled stars trained on
    card_sha256 varchar not null, -- sha256 of the model's card.json at the time
    versions varchar not null,    -- JSON: the libraries of this run (python, stellardb, duckdb, numpy, ...)
    trained_with varchar          -- JSON: card.json "versions", the libraries that trained the model
);
