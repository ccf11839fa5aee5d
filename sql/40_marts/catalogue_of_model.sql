-- The catalogue a user wants first: one row per Gaia source (everything of the view stars:
-- Gaia astrometry, photometry and GSP-Phot, distance, SkyMapper photometry, reference label)
-- with the predictions of one model, NULL where that model did not score the star.
-- A release's `catalogue` table is this for the release's model.
-- Example: select * from catalogue_of_model('demo') where feh < -1 and logg < 3
create or replace macro catalogue_of_model(model_name) as table
select
    s.*,
    p.* exclude (source_id)
from stars as s
left join (select * from predictions_src where model = model_name) as p on p.source_id = s.source_id
