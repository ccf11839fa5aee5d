-- Gaia DR3 x SkyMapper.  For each SkyMapper source: the nearest Gaia source within
-- settings.xmatch_radius_arcsec, with Gaia moved along its proper motion from
-- ref_epoch (J2016.0) to that SkyMapper row's own mean_epoch.  A Gaia source keeps
-- only its nearest SkyMapper partner; the SkyMapper sources it turns down stay
-- unmatched (their nearest Gaia source belongs to a closer one).
-- Candidates come from a hash join on order-10 HEALPix pixels: each Gaia source is
-- offered to its own pixel and the neighbours (table healpix_neighbours).
create or replace view xm_gaia_skymapper as
with

radius as (
    select value as radius_arcsec from settings where name = 'xmatch_radius_arcsec'
),

skymapper_vectors as (
    select
        object_id,
        healpix_12 >> 4 as healpix_10,
        mjd_to_jyear(mean_epoch) as epoch_yr,
        sky_x(raj2000, dej2000) as qx,
        sky_y(raj2000, dej2000) as qy,
        sky_z(raj2000, dej2000) as qz
    from skymapper
),

candidates as (
    select
        s.object_id,
        g.source_id,
        s.epoch_yr - g.ref_epoch_yr as dt_yr,
        vector_sep_arcsec(
            g.px + (s.epoch_yr - g.ref_epoch_yr) * g.vx,
            g.py + (s.epoch_yr - g.ref_epoch_yr) * g.vy,
            g.pz + (s.epoch_yr - g.ref_epoch_yr) * g.vz,
            s.qx, s.qy, s.qz
        ) as sep_arcsec
    from skymapper_vectors as s
    inner join healpix_neighbours as n on n.neighbour_10 = s.healpix_10
    inner join gaia_motion as g on g.healpix_10 = n.healpix_10
),

within_radius as (
    select
        candidates.*,
        count(*) over (partition by object_id) as n_candidates
    from candidates
    where sep_arcsec <= (select radius_arcsec from radius)
),

nearest_gaia as (
    select * from within_radius
    qualify row_number() over (partition by object_id order by sep_arcsec, source_id) = 1
),

final as (
    select
        object_id as skymapper_object_id,
        source_id as gaia_source_id,
        sep_arcsec,
        n_candidates::integer as n_candidates,
        dt_yr
    from nearest_gaia
    qualify row_number() over (partition by source_id order by sep_arcsec, object_id) = 1
)

select * from final
