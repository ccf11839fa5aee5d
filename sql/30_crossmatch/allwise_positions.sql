-- AllWISE sources the crossmatch can use, as xm_gaia_survey reads them.  The catalogue's
-- positions average the cryogenic and post-cryogenic passes (2010.0-2011.1): the row's
-- w1mjdmean (MJD) where the file gave it, else J2010.5.
create or replace view allwise_positions as
select
    cntr as object_id,
    ra as ra_deg,
    dec as dec_deg,
    coalesce(mjd_to_jyear(w1mjdmean), 2010.5) as epoch_yr
from allwise_src
where isfinite(ra) and isfinite(dec) and dec between -90 and 90
    and coalesce(w1mjdmean, 55400.0) between 40000 and 70000
