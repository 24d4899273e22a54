-- Registers the raw tables of a netrev data root for datafusion-cli, so the job files of this
-- folder run unchanged. From the directory that holds `data/`:
--
--   datafusion-cli -f sql/datafusion-cli.sql -f sql/repeated_clicks.sql \
--     -f sql/clicks_dedup.sql -f sql/conversions_dedup.sql -f sql/refunds_dedup.sql \
--     -f sql/converting_clicks.sql -f sql/refund_links.sql -f sql/visitor_clicks.sql \
--     -f sql/stats_hourly.sql \
--     -f sql/cohort_sources.sql -f sql/cohort_ltv.sql -f sql/visitors.sql \
--     -c "SELECT source, sum(clicks), sum(refund_amount) FROM stats_hourly GROUP BY source"
CREATE EXTERNAL TABLE clicks STORED AS PARQUET LOCATION 'data/events/clicks/' PARTITIONED BY (date);
CREATE EXTERNAL TABLE conversions STORED AS PARQUET LOCATION 'data/events/conversions/' PARTITIONED BY (date);
CREATE EXTERNAL TABLE refunds STORED AS PARQUET LOCATION 'data/events/refunds/' PARTITIONED BY (date);
