-- The 80/10/10 train/validation/test split of labelled stars, by a hash of source_id
-- (stellardb.train.split_bucket), written by `stellardb train`.
create table if not exists training_split (
    source_id bigint not null,
    bucket smallint not null,
    split varchar not null
);
