-- One reference label per Gaia source.  When several surveys observed a star, prefer
-- the row with the most of Teff/log g/[Fe/H] present, then the smallest Teff error,
-- then the survey name (so the choice is deterministic).
create or replace view best_labels as
select * from labels
qualify row_number() over (
    partition by source_id
    order by
        (teff is null)::int + (logg is null)::int + (feh is null)::int,
        e_teff asc nulls last,
        survey
) = 1
