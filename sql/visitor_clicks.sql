-- visitor_clicks: per visitor, the first and last click, the number of clicks and the source
-- of the first click (the smallest source name when two clicks share the first time), from
-- clicks_dedup. The cohorts (a visitor's cohort is the day of their first click, and by source
-- that click's source) and the visitor profiles start from it.
CREATE OR REPLACE VIEW visitor_clicks AS
SELECT vid, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS clicks,
       first_value(source ORDER BY ts, source NULLS LAST) AS first_source
FROM clicks_dedup
GROUP BY vid;
