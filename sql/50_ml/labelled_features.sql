-- Every model input (all_features) of the stars with a reference label, with the label:
-- what `stellardb train` reads for each feature set, keeping the stars that pass that set's
-- cuts.  The seed's Gaia + SkyMapper set reads training_set, which is this restricted to
-- passes_feature_cuts.  Labels keep the survey's names (teff, e_teff, ...).
create or replace view labelled_features as
select
    f.*,
    l.teff,
    l.e_teff,
    l.logg,
    l.e_logg,
    l.feh,
    l.e_feh,
    l.survey
from all_features as f
inner join best_labels as l on l.source_id = f.source_id
where l.teff is not null or l.logg is not null or l.feh is not null
