-- Zone of a declination: 0 at dec -90.
create or replace macro zone_of(dec_deg) as floor((dec_deg + 90.0) / zone_cell_deg())::bigint;
