-- Version 0 -> 1.  Version 0 is every database written before stellardb stored a schema
-- version (schema_migrations); the oldest of them have predictions without the
-- extrapolation flags (added 2026-11).  Rows already there keep NULL flags: they were
-- scored before the flags existed.  "if not exists" because version 0 databases differ;
-- "if exists" because a file without the table gets it, flags included, from 00_tables.
-- readers need it when: select count(*) < 4 from information_schema.columns where table_schema = 'main' and table_name = 'predictions' and column_name in ('teff_outside_training', 'logg_outside_training', 'feh_outside_training', 'inputs_outside_training')
alter table if exists predictions add column if not exists teff_outside_training boolean;
alter table if exists predictions add column if not exists logg_outside_training boolean;
alter table if exists predictions add column if not exists feh_outside_training boolean;
alter table if exists predictions add column if not exists inputs_outside_training smallint;
