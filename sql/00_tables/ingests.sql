-- One row per ingested file: what came in, from where, when.
create table if not exists ingests (
    ingest_id integer not null,
    table_name varchar not null,
    file varchar not null,
    sha256 varchar not null,
    format varchar,
    preset varchar,
    rows bigint not null,
    ingested_at timestamp not null
);
