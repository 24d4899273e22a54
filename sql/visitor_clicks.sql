-- visitor_clicks: per visitor, the first and last click and the number of clicks, from
-- clicks_dedup. Both the cohorts (a visitor's cohort is the day of their first click) and the
-- visitor profiles start from it.
CREATE OR REPLACE VIEW visitor_clicks AS
SELECT vid, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS clicks
FROM clicks_dedup
GROUP BY vid;
