-- Each Gaia source as a unit vector at its reference epoch plus its proper motion as a
-- tangent vector in radians per Julian year, so that its position at epoch t is
-- p + (t - ref_epoch) * v (linear motion on the tangent plane, the same model as
-- stellardb.catalog.astrometry.propagate; parallax and radial velocity terms are neglected).
-- Rows the crossmatch cannot use (a position off the sphere, a non-finite or absurd
-- proper motion or epoch; ingest refuses them, but a database may predate the checks)
-- are left out, so one bad row cannot stop every crossmatch; `stellardb xmatch` counts them.
create or replace view gaia_motion as
with

trig as (
    select
        source_id,
        ra,
        dec,
        -- DR3 rows all have ref_epoch 2016.0; files that drop the column get the DR3 value
        coalesce(ref_epoch, 2016.0) as ref_epoch_yr,
        -- two-parameter solutions have no proper motion: they stay where they are
        radians(coalesce(pmra, 0.0) / 3600000.0) as pmra_rad_yr,
        radians(coalesce(pmdec, 0.0) / 3600000.0) as pmdec_rad_yr,
        cos(radians(ra)) as cos_ra,
        sin(radians(ra)) as sin_ra,
        cos(radians(dec)) as cos_dec,
        sin(radians(dec)) as sin_dec
    from gaia_src
    where isfinite(ra) and isfinite(dec) and dec between -90 and 90
        and isfinite(coalesce(pmra, 0.0)) and abs(coalesce(pmra, 0.0)) <= 100000.0
        and isfinite(coalesce(pmdec, 0.0)) and abs(coalesce(pmdec, 0.0)) <= 100000.0
        and isfinite(coalesce(ref_epoch, 2016.0)) and coalesce(ref_epoch, 2016.0) between 1900 and 2100
),

final as (
    select
        source_id,
        ra,
        dec,
        ref_epoch_yr,
        ----------  position at ref_epoch
        cos_dec * cos_ra as px,
        cos_dec * sin_ra as py,
        sin_dec as pz,
        ----------  motion: pmra (already x cos dec) along east, pmdec along north
        -pmra_rad_yr * sin_ra - pmdec_rad_yr * sin_dec * cos_ra as vx,
        pmra_rad_yr * cos_ra - pmdec_rad_yr * sin_dec * sin_ra as vy,
        pmdec_rad_yr * cos_dec as vz
    from trig
)

select * from final
