-- visitor_clicks: per visitor, the first and last click, the number of clicks and the source
-- of the first click (the smallest source name when two clicks share the first time; a click
-- without source only when all of them have none), from clicks_dedup. The cohorts (a
-- visitor's cohort is the day of their first click, and by source that click's source) and
-- the visitor profiles start from it.
-- The first click's source comes from the same single pass over the clicks, as the smallest
-- of a key that sorts as (time, source NULLS LAST): the click time in microseconds, moved
-- up by 10^17 so that every time of the years 0 to 9999 is positive, as 19 digits; then '1'
-- and the source, or '2' for none. An ordered first_value(source ORDER BY ts, source), or
-- joining each visitor's first time back to their clicks, gives the same result; in
-- DataFusion 55 both take more than twice as long.
CREATE OR REPLACE VIEW visitor_clicks AS
SELECT vid, first_seen, last_seen, clicks,
       CASE WHEN substr(first_key, 20, 1) = '1' THEN substr(first_key, 21) END AS first_source
FROM (
  SELECT vid,
         min(ts) AS first_seen,
         max(ts) AS last_seen,
         count(*) AS clicks,
         min(lpad(CAST(CAST(k.ts AS BIGINT) + 100000000000000000 AS VARCHAR), 19, '0')
             || CASE WHEN source IS NULL THEN '2' ELSE '1' || source END) AS first_key
  FROM clicks_dedup AS k
  GROUP BY vid
) AS seen;
