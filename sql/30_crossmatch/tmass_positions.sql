-- 2MASS PSC sources the crossmatch can use, as xm_gaia_survey reads them: the position
-- and its epoch, the Julian year of jdate (a Julian Date: J2000.0 is JD 2451545.0).
-- 2MASS observed in 1997-2001, 15-19 years before Gaia's J2016.0, so a star moving
-- 100 mas/yr has moved 1.5-1.9 arcsec: the macro widens each Gaia source's reach by that.
create or replace view tmass_positions as
select
    pts_key as object_id,
    ra as ra_deg,
    dec as dec_deg,
    2000.0 + (jdate - 2451545.0) / 365.25 as epoch_yr
from tmass_src
where isfinite(ra) and isfinite(dec) and dec between -90 and 90
    and isfinite(jdate) and jdate between 2415020.0 and 2488070.0
