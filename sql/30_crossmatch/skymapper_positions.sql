-- SkyMapper sources the crossmatch can use: a position on the sphere and a mean_epoch
-- that is a Modified Julian Date.  Ingest refuses other rows, but a database may predate
-- the checks; one bad row must not stop every crossmatch (`stellardb xmatch` counts them).
-- Columns as every <survey>_positions view has them, for xm_gaia_survey.
create or replace view skymapper_positions as
select
    object_id,
    raj2000 as ra_deg,
    dej2000 as dec_deg,
    mjd_to_jyear(mean_epoch) as epoch_yr
from skymapper_src
where isfinite(raj2000) and isfinite(dej2000) and dej2000 between -90 and 90
    and isfinite(mean_epoch) and mean_epoch between 40000 and 70000
