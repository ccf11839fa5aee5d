-- SDSS DR17 PhotoObj (primary photometry): the model inputs it gives each Gaia source it matched (table
-- xmatch_sdss), under the survey's own column names (AB mag, apparent), and
-- whether the star has enough of them for a model that uses sdss (3 of 5 bands).
-- Rows with SDSS clean = 0 have NULL photometry since ingest (the sdss-casjobs preset).
create or replace view sdss_features as
with

usable as (
    select
        x.gaia_source_id as source_id,
        v.psfMag_u::double as psfMag_u,
        v.psfMagErr_u::double as psfMagErr_u,
        v.psfMag_g::double as psfMag_g,
        v.psfMagErr_g::double as psfMagErr_g,
        v.psfMag_r::double as psfMag_r,
        v.psfMagErr_r::double as psfMagErr_r,
        v.psfMag_i::double as psfMag_i,
        v.psfMagErr_i::double as psfMagErr_i,
        v.psfMag_z::double as psfMag_z,
        v.psfMagErr_z::double as psfMagErr_z
    from xmatch_sdss_src as x
    inner join sdss_src as v on v.objID = x.sdss_objid
),

final as (
    select
        usable.*,
        (psfMag_u is not null)::int + (psfMag_g is not null)::int + (psfMag_r is not null)::int + (psfMag_i is not null)::int + (psfMag_z is not null)::int >= 3 as passes_sdss_cuts
    from usable
)

select * from final
