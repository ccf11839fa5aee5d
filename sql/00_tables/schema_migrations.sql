-- The stored schema version: one row per migration of sql/migrations/ applied to this file.
-- A new database records every migration as applied (its tables are made at the latest
-- version); an older one runs the missing migrations, in order, when opened for writing.
-- max(version) is the schema version; stellardb refuses files newer than it knows.
create table if not exists schema_migrations (
    version integer primary key,
    name varchar not null,
    applied_at timestamp not null  -- UTC
);
