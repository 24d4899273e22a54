-- converting_clicks: the deduplicated clicks (cid, vid, ts, source) that have a conversion or a
-- refund, from clicks_dedup, conversions_dedup and refunds_dedup. A small table that refund
-- linking, visitors and cohorts join money to, instead of every click.
CREATE OR REPLACE VIEW converting_clicks AS
SELECT cid, vid, ts, source
FROM clicks_dedup
WHERE cid IN (SELECT cid FROM conversions_dedup UNION ALL SELECT cid FROM refunds_dedup);
