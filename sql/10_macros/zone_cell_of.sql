-- Cell of a position.
create or replace macro zone_cell_of(ra_deg, dec_deg) as
    zone_cell_key(zone_of(dec_deg), floor(ra_deg / (360.0 / zone_buckets(zone_of(dec_deg))))::bigint, zone_buckets(zone_of(dec_deg)));
