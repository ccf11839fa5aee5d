-- Every reference label with the Gaia source it belongs to: rows that carry a Gaia
-- source_id as they are, position-only rows through the materialised xmatch_labels.
create or replace view labels as
with

by_id as (
    select
        survey, source_id, teff, e_teff, logg, e_logg, feh, e_feh,
        null::double as match_sep_arcsec
    from sos_src
    where source_id is not null
),

by_position as (
    select
        s.survey, x.gaia_source_id as source_id, s.teff, s.e_teff, s.logg, s.e_logg, s.feh, s.e_feh,
        x.sep_arcsec as match_sep_arcsec
    from sos_src as s
    inner join xmatch_labels_src as x
        on x.survey = s.survey and x.label_ra = s.ra and x.label_dec = s.dec
    where s.source_id is null
),

final as (
    select * from by_id
    union all
    select * from by_position
)

select * from final
