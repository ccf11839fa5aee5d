-- Gaia DR3 x SkyMapper.  For each SkyMapper source: the nearest Gaia source within
-- settings.xmatch_radius_arcsec, with Gaia moved along its proper motion from
-- ref_epoch (J2016.0) to that SkyMapper row's own mean_epoch.  A Gaia source keeps
-- only its nearest SkyMapper partner; the SkyMapper sources it turns down stay
-- unmatched (their nearest Gaia source belongs to a closer one).  Ties go to the
-- smaller id.  Candidates come from a hash join on zone cells (macros/zones.sql):
-- each Gaia source is offered to every cell its proper-motion-widened disk reaches.
create or replace view xm_gaia_skymapper as
with

params as (
    select
        (select value from settings where name = 'xmatch_radius_arcsec') as radius_arcsec,
        min(mjd_to_jyear(mean_epoch)) as epoch_min_yr,
        max(mjd_to_jyear(mean_epoch)) as epoch_max_yr,
        min(dej2000) as dec_min_deg,
        max(dej2000) as dec_max_deg
    from skymapper_positions
),

skymapper_cells as (
    select
        object_id,
        mjd_to_jyear(mean_epoch) as epoch_yr,
        sky_x(raj2000, dej2000) as qx,
        sky_y(raj2000, dej2000) as qy,
        sky_z(raj2000, dej2000) as qz,
        zone_cell_of(raj2000, dej2000) as cell
    from skymapper_positions
),

gaia_cells as (
    select * from gaia_search_cells(
        (select radius_arcsec from params),
        (select epoch_min_yr from params),
        (select epoch_max_yr from params),
        (select dec_min_deg from params),
        (select dec_max_deg from params)
    )
),

candidates as (
    select
        s.object_id,
        g.source_id,
        s.epoch_yr - g.ref_epoch_yr as dt_yr,
        moved_sep_arcsec(
            g.px, g.py, g.pz, g.vx, g.vy, g.vz, s.epoch_yr - g.ref_epoch_yr, s.qx, s.qy, s.qz
        ) as sep_arcsec
    from skymapper_cells as s
    inner join gaia_cells as g on g.cell = s.cell
),

within_radius as (
    select * from candidates
    where sep_arcsec <= (select radius_arcsec from params)
),

-- one window (one sort) gives both the candidate count and the nearest: windows, not
-- arg_min over (sep, id) structs, measured 1.5x faster on 2 M x 1.6 M
nearest_gaia as (
    select
        within_radius.*,
        count(*) over by_distance as n_candidates
    from within_radius
    window by_distance as (
        partition by object_id order by sep_arcsec, source_id
        rows between unbounded preceding and unbounded following
    )
    qualify row_number() over by_distance = 1
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
