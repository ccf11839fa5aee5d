-- 2MASS All-Sky Point Source Catalog (PSC): the model inputs it gives each Gaia source it matched (table
-- xmatch_tmass), under the survey's own column names (Vega mag, apparent), and
-- whether the star has enough of them for a model that uses tmass (2 of 3 bands).
-- An undetected 2MASS band holds an upper limit (its *_msigcom is NULL): it is no
-- measurement, so it is NULL here.
create or replace view tmass_features as
with

usable as (
    select
        x.gaia_source_id as source_id,
        case when v.j_msigcom is not null then v.j_m end::double as j_m,
        v.j_msigcom::double as j_msigcom,
        case when v.h_msigcom is not null then v.h_m end::double as h_m,
        v.h_msigcom::double as h_msigcom,
        case when v.k_msigcom is not null then v.k_m end::double as k_m,
        v.k_msigcom::double as k_msigcom
    from xmatch_tmass_src as x
    inner join tmass_src as v on v.pts_key = x.tmass_pts_key
),

final as (
    select
        usable.*,
        (j_m is not null)::int + (h_m is not null)::int + (k_m is not null)::int >= 2 as passes_tmass_cuts
    from usable
)

select * from final
