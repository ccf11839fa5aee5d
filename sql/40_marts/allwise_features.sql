-- AllWISE Source Catalog: the model inputs it gives each Gaia source it matched (table
-- xmatch_allwise), under the survey's own column names (Vega mag, apparent), and
-- whether the star has enough of them for a model that uses allwise (2 of 4 bands).
-- An AllWISE band with S/N < 2 holds an upper limit (its w?sigmpro is NULL): it is no
-- measurement, so it is NULL here.
create or replace view allwise_features as
with

usable as (
    select
        x.gaia_source_id as source_id,
        case when v.w1sigmpro is not null then v.w1mpro end::double as w1mpro,
        v.w1sigmpro::double as w1sigmpro,
        case when v.w2sigmpro is not null then v.w2mpro end::double as w2mpro,
        v.w2sigmpro::double as w2sigmpro,
        case when v.w3sigmpro is not null then v.w3mpro end::double as w3mpro,
        v.w3sigmpro::double as w3sigmpro,
        case when v.w4sigmpro is not null then v.w4mpro end::double as w4mpro,
        v.w4sigmpro::double as w4sigmpro
    from xmatch_allwise_src as x
    inner join allwise_src as v on v.cntr = x.allwise_cntr
),

final as (
    select
        usable.*,
        (w1mpro is not null)::int + (w2mpro is not null)::int + (w3mpro is not null)::int + (w4mpro is not null)::int >= 2 as passes_allwise_cuts
    from usable
)

select * from final
