-- Numbers the views read (views take no parameters; CONTRIBUTING.md, "SQL").
-- `stellardb xmatch --radius-arcsec R` updates xmatch_radius_arcsec (SkyMapper), and
-- `--survey NAME --radius-arcsec R` the survey's NAME_match_radius_arcsec.
create table if not exists settings (
    name varchar not null,
    value double not null,
    description varchar
);
insert into settings
select * from (values
    ('xmatch_radius_arcsec', 1.0, 'Gaia x SkyMapper match radius after propagating Gaia to the SkyMapper epoch'),
    ('label_match_radius_arcsec', 1.0, 'label (no Gaia id) x Gaia match radius after propagating Gaia to the label epoch'),
    ('tmass_match_radius_arcsec', 1.0, 'Gaia x 2MASS PSC match radius after propagating Gaia to the row''s jdate'),
    ('allwise_match_radius_arcsec', 2.0, 'Gaia x AllWISE match radius after propagating Gaia to the row''s epoch (WISE PSF 6 arcsec)'),
    ('ps1_match_radius_arcsec', 1.0, 'Gaia x Pan-STARRS1 match radius after propagating Gaia to the row''s epochMean'),
    ('sdss_match_radius_arcsec', 1.0, 'Gaia x SDSS match radius after propagating Gaia to the row''s mjd'),
    ('min_labels_per_feature_set', 200, 'labelled stars a feature set needs before `stellardb train` fits a model for it')
) as defaults(name, value, description)
where defaults.name not in (select name from settings);
