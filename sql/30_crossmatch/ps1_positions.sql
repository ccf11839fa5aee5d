-- Pan-STARRS1 sources the crossmatch can use, as xm_gaia_survey reads them: the mean
-- position at epochMean (MJD), J2012.0 where a file has no epoch.
create or replace view ps1_positions as
select
    objID as object_id,
    raMean as ra_deg,
    decMean as dec_deg,
    coalesce(mjd_to_jyear(epochMean), 2012.0) as epoch_yr
from ps1_src
where isfinite(raMean) and isfinite(decMean) and decMean between -90 and 90
    and coalesce(epochMean, 56000.0) between 40000 and 70000
