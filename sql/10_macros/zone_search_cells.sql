-- Every zone cell (zone_cell_deg) that a disk of radius reach_deg around (ra_deg, dec_deg)
-- touches, as a list: the zones its declinations span, and in each zone the RA buckets
-- within zone_ra_reach_deg (all of them where the disk reaches round the pole).  A position
-- within reach_deg of the centre lies in one of these cells (zone_cell_of), so a hash join
-- on the cell finds every pair within the reach; the service's upload crossmatch uses it.
create or replace macro zone_search_cells(ra_deg, dec_deg, reach_deg) as
    flatten(list_transform(
        range(zone_of(dec_deg - reach_deg), zone_of(dec_deg + reach_deg) + 1),
        lambda zone: list_transform(
            case
                when zone_ra_reach_deg(dec_deg, reach_deg) * 2.0 >= 360.0 - 360.0 / zone_buckets(zone)
                    then range(0, zone_buckets(zone))
                else range(
                    floor((ra_deg - zone_ra_reach_deg(dec_deg, reach_deg)) / (360.0 / zone_buckets(zone)))::bigint,
                    floor((ra_deg + zone_ra_reach_deg(dec_deg, reach_deg)) / (360.0 / zone_buckets(zone)))::bigint + 1
                )
            end,
            lambda bucket: zone_cell_key(zone, bucket, zone_buckets(zone))
        )
    ));
