-- RA buckets in a zone: each at least one cell wide at the zone's highest |dec|.
create or replace macro zone_buckets(zone) as
    greatest(1, floor(
        360.0 * cos(radians(least(90.0, greatest(abs(zone * zone_cell_deg() - 90.0), abs((zone + 1) * zone_cell_deg() - 90.0)))))
        / zone_cell_deg()
    ))::bigint;
