-- Numbers the views read (views take no parameters; CONTRIBUTING.md, "SQL").
-- `stellardb xmatch --radius-arcsec R` updates xmatch_radius_arcsec.
create table if not exists settings (
    name varchar not null,
    value double not null,
    description varchar
);
insert into settings
select * from (values
    ('xmatch_radius_arcsec', 1.0, 'Gaia x SkyMapper match radius after propagating Gaia to the SkyMapper epoch'),
    ('label_match_radius_arcsec', 1.0, 'label (no Gaia id) x Gaia match radius after propagating Gaia to the label epoch')
) as defaults(name, value, description)
where defaults.name not in (select name from settings);
