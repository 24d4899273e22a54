-- cohort_ltv: net lifetime value per visitor by cohort and age (DESIGN.md 5 and 7), from
-- visitor_clicks, converting_clicks, conversions_dedup and refunds_dedup (and the raw
-- tables' latest time).
-- A visitor's cohort is the UTC day of their first click; an event's age is the whole days
-- elapsed between that first click and the event (a conversion or refund belongs to the
-- visitor of its click; refunds count at their own time, so they lower the curve from the age
-- at which they happen). For each cohort, ages run from 0 to the days between the cohort and
-- the latest event stored, at most 365:
--   gross(k)   = sum of the cohort's conversion amounts with age <= k
--   refunds(k) = sum of the cohort's refund amounts with age <= k
--   net(k)     = gross(k) - refunds(k)
--   ltv(k)     = net(k) / cohort_size, rounded half-even to 4 decimals
-- Times are compared as microseconds since the epoch; a day is 86400000000 of them.
CREATE OR REPLACE VIEW cohort_ltv AS
WITH visitor AS (
  SELECT vid,
         CAST(first_seen AS BIGINT) AS first_us,
         CAST(date_trunc('day', first_seen) AS DATE) AS cohort
  FROM visitor_clicks
),
cohorts AS (
  SELECT cohort,
         min(first_us) / 86400000000 AS cohort_day,
         count(*) AS cohort_size
  FROM visitor
  GROUP BY cohort
),
money AS (
  SELECT v.cohort,
         greatest(CAST(c.ts AS BIGINT) - v.first_us, 0) / 86400000000 AS age,
         c.amount AS gross,
         CAST(0 AS DECIMAL(18, 4)) AS refund
  FROM conversions_dedup AS c
  JOIN converting_clicks AS k ON k.cid = c.cid
  JOIN visitor AS v ON v.vid = k.vid
  UNION ALL
  SELECT v.cohort,
         greatest(CAST(r.ts AS BIGINT) - v.first_us, 0) / 86400000000 AS age,
         CAST(0 AS DECIMAL(18, 4)) AS gross,
         r.amount AS refund
  FROM refunds_dedup AS r
  JOIN converting_clicks AS k ON k.cid = r.cid
  JOIN visitor AS v ON v.vid = k.vid
),
per_age AS (
  SELECT cohort, age, sum(gross) AS gross, sum(refund) AS refunds
  FROM money
  GROUP BY cohort, age
),
horizon AS (
  SELECT max(last_us) / 86400000000 AS last_day
  FROM (
    SELECT CAST(max(ts) AS BIGINT) AS last_us FROM clicks
    UNION ALL SELECT CAST(max(ts) AS BIGINT) FROM conversions
    UNION ALL SELECT CAST(max(ts) AS BIGINT) FROM refunds
  ) AS latest
),
grid AS (
  SELECT c.cohort, c.cohort_size,
         unnest(range(0, least(h.last_day - c.cohort_day, 365) + 1)) AS age
  FROM cohorts AS c
  CROSS JOIN horizon AS h
),
cumulative AS (
  SELECT g.cohort, g.age, g.cohort_size,
         sum(coalesce(p.gross, 0)) OVER w AS gross,
         sum(coalesce(p.refunds, 0)) OVER w AS refunds
  FROM grid AS g
  LEFT JOIN per_age AS p ON p.cohort = g.cohort AND p.age = g.age
  WINDOW w AS (PARTITION BY g.cohort ORDER BY g.age ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
net_units AS (
  SELECT cohort, age, cohort_size, gross, refunds,
         CAST((gross - refunds) * 10000 AS BIGINT) AS n
  FROM cumulative
)
SELECT cohort,
       age,
       cohort_size,
       CAST(gross AS DECIMAL(18, 4)) AS gross,
       CAST(refunds AS DECIMAL(18, 4)) AS refunds,
       CAST(gross - refunds AS DECIMAL(18, 4)) AS net,
       -- |n| / size in 1/10000 units, rounded half to even, with n's sign.
       CAST(CAST(
         (CASE WHEN n < 0 THEN -1 ELSE 1 END)
         * (abs(n) / cohort_size
            + CASE WHEN 2 * (abs(n) % cohort_size) > cohort_size
                     OR (2 * (abs(n) % cohort_size) = cohort_size
                         AND (abs(n) / cohort_size) % 2 = 1)
                   THEN 1 ELSE 0 END)
         AS DECIMAL(18, 0)) / 10000 AS DECIMAL(18, 4)) AS ltv
FROM net_units;
