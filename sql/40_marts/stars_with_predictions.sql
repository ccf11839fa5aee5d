-- Stars with a model's predictions (one row per star and model).  teff, logg, feh
-- here are the predictions; the reference labels are teff_ref, logg_ref, feh_ref.
-- *_outside_training and inputs_outside_training flag extrapolation, feature_set names the
-- inputs the prediction used (sql/00_tables/predictions.sql).
-- Example: select count(*) from stars_with_predictions where feh < -1 and logg < 3
--          and not (feh_outside_training or logg_outside_training)
create or replace view stars_with_predictions as
select
    s.*,
    p.teff,
    p.teff_err,
    p.logg,
    p.logg_err,
    p.feh,
    p.feh_err,
    p.teff_outside_training,
    p.logg_outside_training,
    p.feh_outside_training,
    p.inputs_outside_training,
    p.model,
    p.feature_set,
    p.scored_at
from stars as s
inner join predictions_src as p on p.source_id = s.source_id
