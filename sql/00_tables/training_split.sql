-- The 80/10/10 train/validation/test split of labelled stars, by a hash of source_id
-- (stellardb.ml.train.split_bucket), written by `stellardb train`.
create table if not exists training_split (
    source_id bigint not null,  -- Gaia DR3 source_id of a labelled star
    bucket smallint not null,   -- splitmix64(source_id) % 100
    split varchar not null      -- train (0-79), validation (80-89), test (90-99)
);
