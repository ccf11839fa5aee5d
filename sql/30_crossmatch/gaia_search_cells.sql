-- Every zone cell that a Gaia source can reach, for a crossmatch of radius radius_arcsec
-- against a catalogue whose epochs lie in [epoch_min_yr, epoch_max_yr]: the source's
-- reach is the radius plus its proper motion times the largest epoch difference (plus
-- 1 mas of slack), so a partner anywhere within the radius at any of those epochs sits
-- in one of the returned cells.  Most sources return one cell; fast movers and sources
-- near cell edges a few more.  Sources that cannot reach the catalogue's declination
-- range [dec_min_deg, dec_max_deg] return none (all-sky Gaia against SkyMapper's
-- southern sky: half the work).  A table macro because these vary by caller.
create or replace macro gaia_search_cells(radius_arcsec, epoch_min_yr, epoch_max_yr, dec_min_deg, dec_max_deg) as table
with

reach as (
    select
        g.*,
        (radius_arcsec + 0.001
            + degrees(sqrt(vx * vx + vy * vy + vz * vz)) * 3600.0
              * greatest(abs(epoch_min_yr - ref_epoch_yr), abs(epoch_max_yr - ref_epoch_yr))
        ) / 3600.0 as reach_deg
    from gaia_motion as g
),

in_range as (
    select * from reach
    where dec + reach_deg >= dec_min_deg and dec - reach_deg <= dec_max_deg
),

zones as (
    select
        in_range.*,
        unnest(range(zone_of(dec - reach_deg), zone_of(dec + reach_deg) + 1)) as zone
    from in_range
),

buckets as (
    select
        zones.*,
        zone_buckets(zone) as n_buckets,
        zone_ra_reach_deg(dec, reach_deg) as ra_reach_deg
    from zones
),

final as (
    select
        source_id, ref_epoch_yr, px, py, pz, vx, vy, vz,
        zone_cell_key(zone, unnest(
            case
                -- the disk spans the whole zone (near a pole): every bucket
                when ra_reach_deg * 2.0 >= 360.0 - 360.0 / n_buckets then range(0, n_buckets)
                else range(
                    floor((ra - ra_reach_deg) / (360.0 / n_buckets))::bigint,
                    floor((ra + ra_reach_deg) / (360.0 / n_buckets))::bigint + 1
                )
            end
        ), n_buckets) as cell
    from buckets
)

select * from final
