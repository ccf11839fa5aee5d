-- Pan-STARRS1 DR2 mean object photometry (ObjectThin + MeanObject): the model inputs it gives each Gaia source it matched (table
-- xmatch_ps1), under the survey's own column names (AB mag, apparent), and
-- whether the star has enough of them for a model that uses ps1 (3 of 5 bands).
-- MAST's -999 became NULL at ingest.
create or replace view ps1_features as
with

usable as (
    select
        x.gaia_source_id as source_id,
        v.gMeanPSFMag::double as gMeanPSFMag,
        v.gMeanPSFMagErr::double as gMeanPSFMagErr,
        v.rMeanPSFMag::double as rMeanPSFMag,
        v.rMeanPSFMagErr::double as rMeanPSFMagErr,
        v.iMeanPSFMag::double as iMeanPSFMag,
        v.iMeanPSFMagErr::double as iMeanPSFMagErr,
        v.zMeanPSFMag::double as zMeanPSFMag,
        v.zMeanPSFMagErr::double as zMeanPSFMagErr,
        v.yMeanPSFMag::double as yMeanPSFMag,
        v.yMeanPSFMagErr::double as yMeanPSFMagErr
    from xmatch_ps1_src as x
    inner join ps1_src as v on v.objID = x.ps1_objid
),

final as (
    select
        usable.*,
        (gMeanPSFMag is not null)::int + (rMeanPSFMag is not null)::int + (iMeanPSFMag is not null)::int + (zMeanPSFMag is not null)::int + (yMeanPSFMag is not null)::int >= 3 as passes_ps1_cuts
    from usable
)

select * from final
