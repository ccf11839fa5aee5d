-- Label rows without a Gaia id (PASTEL, DelgadoMena, ...) x Gaia DR3 by position.
-- Gaia is moved along its proper motion to the label's epoch (ref_epoch, J2000 when
-- unknown: catalogue positions are J2000 unless they say otherwise) and the nearest
-- Gaia source within settings.label_match_radius_arcsec wins; a Gaia source takes at
-- most one label row per survey (the nearest).
create or replace view xm_labels_gaia as
with

radius as (
    select value as radius_arcsec from settings where name = 'label_match_radius_arcsec'
),

label_vectors as (
    select
        survey,
        ra as label_ra,
        dec as label_dec,
        healpix_12 >> 4 as healpix_10,
        coalesce(ref_epoch, 2000.0) as epoch_yr,
        sky_x(ra, dec) as qx,
        sky_y(ra, dec) as qy,
        sky_z(ra, dec) as qz
    from sos
    where source_id is null and ra is not null and dec is not null
),

candidates as (
    select
        l.survey,
        l.label_ra,
        l.label_dec,
        g.source_id,
        vector_sep_arcsec(
            g.px + (l.epoch_yr - g.ref_epoch_yr) * g.vx,
            g.py + (l.epoch_yr - g.ref_epoch_yr) * g.vy,
            g.pz + (l.epoch_yr - g.ref_epoch_yr) * g.vz,
            l.qx, l.qy, l.qz
        ) as sep_arcsec
    from label_vectors as l
    inner join healpix_neighbours as n on n.neighbour_10 = l.healpix_10
    inner join gaia_motion as g on g.healpix_10 = n.healpix_10
),

within_radius as (
    select
        candidates.*,
        count(*) over (partition by survey, label_ra, label_dec) as n_candidates
    from candidates
    where sep_arcsec <= (select radius_arcsec from radius)
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
