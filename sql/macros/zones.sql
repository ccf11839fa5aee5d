-- The sky cut into cells for crossmatching (the Zones algorithm: Gray, Nieto-Santisteban
-- & Szalay 2006, "The Zones Algorithm for Finding Points-Near-a-Point or Cross-Matching
-- Spatial Datasets", MSR-TR-2006-52): declination zones of height zone_cell_deg(), each
-- cut in RA into buckets at least zone_cell_deg() wide on the sky, so that a disk of
-- radius r touches a known, small set of cells.  Candidate pairs then come from a hash
-- join on one integer cell key.  Exact across RA 0/360 (bucket numbers wrap) and at the
-- poles (the polar zones are a single bucket).
create or replace macro zone_cell_deg() as 30.0 / 3600.0;

-- Zone of a declination: 0 at dec -90.
create or replace macro zone_of(dec_deg) as floor((dec_deg + 90.0) / zone_cell_deg())::bigint;

-- RA buckets in a zone: each at least one cell wide at the zone's highest |dec|.
create or replace macro zone_buckets(zone) as
    greatest(1, floor(
        360.0 * cos(radians(least(90.0, greatest(abs(zone * zone_cell_deg() - 90.0), abs((zone + 1) * zone_cell_deg() - 90.0)))))
        / zone_cell_deg()
    ))::bigint;

-- One integer per cell (a zone has at most 43,200 buckets).
create or replace macro zone_cell_key(zone, bucket, n_buckets) as
    zone * 100000 + ((bucket % n_buckets) + n_buckets) % n_buckets;

-- Cell of a position.
create or replace macro zone_cell_of(ra_deg, dec_deg) as
    zone_cell_key(zone_of(dec_deg), floor(ra_deg / (360.0 / zone_buckets(zone_of(dec_deg))))::bigint, zone_buckets(zone_of(dec_deg)));

-- Half-width in RA (deg) of a disk of radius reach_deg seen from declinations within
-- [dec - reach, dec + reach]: sin(dRA/2) <= sin(r/2) / cos(max |dec|) (haversine bound);
-- 180 when the disk reaches a pole.
create or replace macro zone_ra_reach_deg(dec_deg, reach_deg) as
    case
        when cos(radians(least(90.0, greatest(abs(dec_deg - reach_deg), abs(dec_deg + reach_deg)))))
             <= sin(radians(reach_deg) / 2.0) * 1.000001 then 180.0
        else least(180.0, 2.0 * degrees(asin(
            sin(radians(reach_deg) / 2.0)
            / cos(radians(least(90.0, greatest(abs(dec_deg - reach_deg), abs(dec_deg + reach_deg)))))
        )) * 1.000001)
    end;
