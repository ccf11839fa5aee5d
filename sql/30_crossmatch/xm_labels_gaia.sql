-- Label rows without a Gaia id (PASTEL, DelgadoMena, ...) x Gaia DR3 by position.
-- Gaia is moved along its proper motion to the label's epoch (ref_epoch, J2000 when
-- unknown: catalogue positions are J2000 unless they say otherwise) and the nearest
-- Gaia source within settings.label_match_radius_arcsec wins; a Gaia source takes at
-- most one label row per survey (the nearest).  Same zone-cell join as xm_gaia_skymapper.
create or replace view xm_labels_gaia as
with

labels_without_id as (
    select
        survey,
        ra as label_ra,
        dec as label_dec,
        coalesce(ref_epoch, 2000.0) as epoch_yr,
        sky_x(ra, dec) as qx,
        sky_y(ra, dec) as qy,
        sky_z(ra, dec) as qz,
        zone_cell_of(ra, dec) as cell
    from sos_src
    where source_id is null and ra is not null and dec is not null
        -- rows no crossmatch can use (a database from before ingest checked them) are left out
        and isfinite(ra) and isfinite(dec) and dec between -90 and 90
        and coalesce(ref_epoch, 2000.0) between 1900 and 2100
),

params as (
    select
        (select value from settings where name = 'label_match_radius_arcsec') as radius_arcsec,
        coalesce(min(epoch_yr), 2016.0) as epoch_min_yr,
        coalesce(max(epoch_yr), 2016.0) as epoch_max_yr,
        coalesce(min(label_dec), -90.0) as dec_min_deg,
        coalesce(max(label_dec), 90.0) as dec_max_deg
    from labels_without_id
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
        l.survey,
        l.label_ra,
        l.label_dec,
        g.source_id,
        moved_sep_arcsec(
            g.px, g.py, g.pz, g.vx, g.vy, g.vz, l.epoch_yr - g.ref_epoch_yr, l.qx, l.qy, l.qz
        ) as sep_arcsec
    from labels_without_id as l
    inner join gaia_cells as g on g.cell = l.cell
),

within_radius as (
    select
        candidates.*,
        count(*) over (partition by survey, label_ra, label_dec) as n_candidates
    from candidates
    where sep_arcsec <= (select radius_arcsec from params)
),

nearest_gaia as (
    select * from within_radius
    qualify row_number() over (
        partition by survey, label_ra, label_dec order by sep_arcsec, source_id
    ) = 1
),

final as (
    select
        survey,
        label_ra,
        label_dec,
        source_id as gaia_source_id,
        sep_arcsec,
        n_candidates::integer as n_candidates
    from nearest_gaia
    qualify row_number() over (
        partition by survey, source_id order by sep_arcsec, label_ra, label_dec
    ) = 1
)

select * from final
