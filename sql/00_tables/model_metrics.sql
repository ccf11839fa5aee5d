-- Test-split metrics of each trained model, for the MLP and for Gaia GSP-Phot on the
-- same stars: residual r = predicted - reference; mad = median(|r - median(r)|).
-- Written by `stellardb train` (one row per model, parameter, method and sample).
create table if not exists model_metrics (
    model varchar not null,        -- folder name under models/
    parameter varchar not null,    -- teff | logg | feh
    method varchar not null,       -- mlp | gspphot
    sample varchar not null,       -- test (all test stars) | test_with_gspphot (the comparison sample)
    unit varchar not null,         -- K | dex
    n bigint not null,             -- stars
    mean double,                   -- of r = predicted - reference
    median double,
    sigma double,                  -- standard deviation of r
    mad double,                    -- median(|r - median(r)|), unscaled
    mad_scaled double,             -- 1.4826 * mad
    rmse double,
    calibration_68 double,         -- fraction of stars with |r| < error (about 0.68 when calibrated)
    trained_at timestamp not null
);
