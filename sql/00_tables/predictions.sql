-- Predictions of a trained model for every star that passes the feature cuts.
-- teff K, logg log(cm/s^2), feh dex; *_err are 1-sigma per-star uncertainties.
-- *_outside_training: the prediction lies outside the range of that parameter's
-- training-split labels (card.json training_ranges.labels): an extrapolation, whose
-- error is not calibrated.  inputs_outside_training: how many of the network's inputs
-- (27 features, 11 colours; missing ones not counted) lie outside their training-split
-- range (card.json training_ranges.inputs); 0 = within the training data everywhere.
-- The flags are NULL for rows scored before they existed or by a model whose card
-- has no training_ranges.  feature_set: the inputs of the model that made the row
-- ("gaia": Gaia G/BP/RP, GSP-Phot and the distance only; "gaia-skymapper": the seed's
-- set; "gaia-tmass-allwise": Gaia plus 2MASS and AllWISE; ...; stellardb.ml.feature_sets),
-- NULL for rows scored before it was recorded (all by the seed's Gaia + SkyMapper set).
create table if not exists predictions (
    source_id bigint not null,
    teff double,
    teff_err double,
    logg double,
    logg_err double,
    feh double,
    feh_err double,
    model varchar not null,
    scored_at timestamp not null,
    teff_outside_training boolean,
    logg_outside_training boolean,
    feh_outside_training boolean,
    inputs_outside_training smallint,
    feature_set varchar
);
