-- For each row of a photometric survey: its nearest Gaia DR3 source within radius_arcsec,
-- with Gaia moved along its proper motion from ref_epoch (J2016.0) to the row's own epoch
-- (ties to the smaller source_id), and how many Gaia sources lay within the radius.
-- The first half of the crossmatch (xm_gaia_survey); every survey row's answer depends only
-- on the Gaia sources within radius + proper motion x epoch span of it, so the cluster
-- crossmatch (stellardb.cluster.xmatch) runs this macro per HEALPix partition, on the
-- partition's survey rows and its Gaia rows plus their margin, and gets the same rows.
-- `positions` names a <survey>_positions view (object_id, ra_deg, dec_deg, epoch_yr).
-- Candidates come from a hash join on zone cells (10_macros/zone_*.sql): each Gaia source
-- is offered to every cell its proper-motion-widened disk reaches (gaia_search_cells), so
-- 2MASS's 17-year gap costs only wider disks for fast movers.
create or replace macro xm_nearest_gaia(positions, radius_arcsec) as table
with

survey_rows as (
    select * from query_table(positions)
),

params as (
    select
        radius_arcsec as radius_arcsec,
        min(epoch_yr) as epoch_min_yr,
        max(epoch_yr) as epoch_max_yr,
        min(dec_deg) as dec_min_deg,
        max(dec_deg) as dec_max_deg
    from survey_rows
),

survey_cells as (
    select
        object_id,
        epoch_yr,
        sky_x(ra_deg, dec_deg) as qx,
        sky_y(ra_deg, dec_deg) as qy,
        sky_z(ra_deg, dec_deg) as qz,
        zone_cell_of(ra_deg, dec_deg) as cell
    from survey_rows
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
    from survey_cells as s
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
        object_id,
        source_id as gaia_source_id,
        sep_arcsec,
        n_candidates::integer as n_candidates,
        dt_yr
    from nearest_gaia
)

select * from final
