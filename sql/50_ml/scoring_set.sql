-- Stars that pass the feature-level cuts: what `stellardb score` predicts for.
create or replace view scoring_set as
select * from features
where passes_feature_cuts
