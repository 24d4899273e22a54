-- cohort_sources: cohort LTV by traffic source (docs/design.md §5, /api/cohorts?source=), from
-- visitor_clicks, conversions_dedup, refunds_dedup and converting_clicks.
-- A visitor belongs to the cohort of their first click's day and to that click's source (the
-- smallest source name when two clicks share the first time). Per cohort, source and age
-- 0..max: cohort_size and the cumulative gross, refunds and net of the visitors' conversions
-- and refunds at their own ages, exactly as cohort_ltv (whose rows are these summed over
-- sources, in cohort_ltv.sql); ltv = net / cohort_size is left to the reader, which may
-- first merge cohorts.
CREATE OR REPLACE VIEW cohort_sources AS
WITH cohorts AS (
  -- Visitors are counted per day bin and made a date only once per cohort (a cast of every
  -- visitor's time to a date goes through the time zone, row by row).
  SELECT CAST(day AS DATE) AS cohort, source, cohort_day, cohort_size
  FROM (
    SELECT date_bin(INTERVAL '1 day', first_seen) AS day,
           first_source AS source,
           min(CAST(first_seen AS BIGINT)) / 86400000000 AS cohort_day,
           count(*) AS cohort_size
    FROM visitor_clicks
    GROUP BY date_bin(INTERVAL '1 day', first_seen), first_source
  ) AS binned
),
events AS (
  SELECT cid, ts, amount AS gross, CAST(0 AS DECIMAL(18, 4)) AS refund
  FROM conversions_dedup
  UNION ALL
  SELECT cid, ts, CAST(0 AS DECIMAL(18, 4)) AS gross, amount AS refund
  FROM refunds_dedup
),
money AS (
  SELECT CAST(v.first_seen AS DATE) AS cohort, v.first_source AS source,
         greatest(CAST(e.ts AS BIGINT) - CAST(v.first_seen AS BIGINT), 0) / 86400000000 AS age,
         e.gross, e.refund
  FROM events AS e
  JOIN converting_clicks AS k ON k.cid = e.cid
  JOIN visitor_clicks AS v ON v.vid = k.vid
),
per_age AS (
  SELECT cohort, source, age, sum(gross) AS gross, sum(refund) AS refunds
  FROM money
  GROUP BY cohort, source, age
),
horizon AS (
  -- One row from three one-row scans, not a UNION of them: Ballista 55 cannot run a UNION
  -- whose inputs are answered from the files' statistics.
  SELECT greatest(c.last_us, v.last_us, r.last_us) / 86400000000 AS last_day
  FROM (SELECT CAST(max(ts) AS BIGINT) AS last_us FROM clicks) AS c
  CROSS JOIN (SELECT CAST(max(ts) AS BIGINT) AS last_us FROM conversions) AS v
  CROSS JOIN (SELECT CAST(max(ts) AS BIGINT) AS last_us FROM refunds) AS r
),
grid AS (
  SELECT c.cohort, c.source, c.cohort_size,
         unnest(range(0, least(h.last_day - c.cohort_day, 365) + 1)) AS age
  FROM cohorts AS c
  CROSS JOIN horizon AS h
),
cumulative AS (
  SELECT g.cohort, g.source, g.age, g.cohort_size,
         sum(coalesce(p.gross, 0)) OVER w AS gross,
         sum(coalesce(p.refunds, 0)) OVER w AS refunds
  FROM grid AS g
  LEFT JOIN per_age AS p
    ON p.cohort = g.cohort AND p.age = g.age AND p.source IS NOT DISTINCT FROM g.source
  WINDOW w AS (PARTITION BY g.cohort, g.source ORDER BY g.age
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT cohort,
       source,
       age,
       cohort_size,
       CAST(gross AS DECIMAL(18, 4)) AS gross,
       CAST(refunds AS DECIMAL(18, 4)) AS refunds,
       CAST(gross - refunds AS DECIMAL(18, 4)) AS net
FROM cumulative;
