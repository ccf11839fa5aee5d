-- Test-split metrics of each trained model, for the MLP and for Gaia GSP-Phot on the
-- same stars: residual r = predicted - reference; mad = median(|r - median(r)|).
create table if not exists model_metrics (
    model varchar not null,
    parameter varchar not null,
    method varchar not null,  -- mlp | gspphot
    sample varchar not null,  -- test | test_with_gspphot
    unit varchar not null,
    n bigint not null,
    mean double,
    median double,
    sigma double,
    mad double,
    mad_scaled double,
    rmse double,
    calibration_68 double,
    trained_at timestamp not null
);
