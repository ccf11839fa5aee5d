-- Version 1 -> 2.  Predictions record which feature set (which photometric surveys, besides
-- Gaia and the distance) the model that made them used: `stellardb score` gives each star
-- the best model among those whose inputs it has (sql/00_tables/predictions.sql).  Rows
-- scored before were all made by the seed's Gaia + SkyMapper features; they keep NULL
-- ("scored before feature sets were recorded"), since a migration only adds columns.
-- readers need it when: select count(*) = 0 from information_schema.columns where table_schema = 'main' and table_name = 'predictions' and column_name = 'feature_set'
alter table if exists predictions add column if not exists feature_set varchar;
