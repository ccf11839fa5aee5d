-- One integer per cell (a zone has at most 43,200 buckets).
create or replace macro zone_cell_key(zone, bucket, n_buckets) as
    zone * 100000 + ((bucket % n_buckets) + n_buckets) % n_buckets;
