-- Stars that pass the feature-level cuts and have a reference label: what
-- `stellardb train` learns from.  Labels keep the survey's names (teff, e_teff, ...).
create or replace view training_set as
select
    f.*,
    l.teff,
    l.e_teff,
    l.logg,
    l.e_logg,
    l.feh,
    l.e_feh,
    l.survey
from scoring_set as f
inner join best_labels as l on l.source_id = f.source_id
where l.teff is not null or l.logg is not null or l.feh is not null
