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
