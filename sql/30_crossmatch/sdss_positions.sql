-- SDSS sources the crossmatch can use, as xm_gaia_survey reads them: the position at
-- the imaging run's mjd, J2004.0 where a file has no epoch.
create or replace view sdss_positions as
select
    objID as object_id,
    ra as ra_deg,
    dec as dec_deg,
    coalesce(mjd_to_jyear(mjd), 2004.0) as epoch_yr
from sdss_src
where isfinite(ra) and isfinite(dec) and dec between -90 and 90
    and coalesce(mjd, 53000.0) between 40000 and 70000
