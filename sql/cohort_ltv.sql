-- cohort_ltv: net lifetime value per visitor by cohort and age (docs/design.md §5 and §7), from
-- cohort_sources (the same per traffic source, summed here over sources).
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
WITH cumulative AS (
  SELECT cohort, age,
         sum(cohort_size) AS cohort_size,
         sum(gross) AS gross,
         sum(refunds) AS refunds
  FROM cohort_sources
  GROUP BY cohort, age
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
