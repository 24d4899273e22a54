-- stats_hourly: the additive measures of the stats table per click hour and dimensions
-- (docs/design.md §5 and §7), from clicks_dedup, conversions_dedup and refund_links.
-- Conversions and refunds count in the hour of their click, however late they arrive.
-- Refunds of unknown clicks (unmatched) have no hour and stay out; refunds of a click without
-- conversion count as refunds but refund no conversion. Every other stats column derives:
--   net_revenue = gross_revenue - refund_amount, refund_rate = 100 * refunded_conversions /
--   conversions, profit = net_revenue - cost, roi = 100 * profit / cost,
--   epc = net_revenue / clicks, cr = 100 * conversions / clicks.
-- `date` (the click's UTC day) names the partition the row is stored in. The hour is found
-- with date_bin (integer arithmetic; date_trunc converts every row through the time zone)
-- and given back the microsecond unit of the raw `ts` that date_bin widens to nanoseconds.
CREATE OR REPLACE VIEW stats_hourly AS
WITH conv AS (
  SELECT cid, count(*) AS conversions, sum(amount) AS gross_revenue
  FROM conversions_dedup
  GROUP BY cid
),
refs AS (
  SELECT cid,
         count(*) AS refunds,
         sum(amount) AS refund_amount,
         sum(CASE WHEN "type" = 'chargeback' THEN 1 ELSE 0 END) AS chargebacks,
         sum(CASE WHEN "type" = 'chargeback' THEN amount END) AS chargeback_amount,
         count(DISTINCT CASE WHEN linked THEN conversion_txid END)
           + max(CASE WHEN linked AND conversion_txid IS NULL THEN 1 ELSE 0 END)
           AS refunded_conversions
  FROM refund_links
  GROUP BY cid
),
-- The money of each click with a conversion or a refund, so the clicks are joined once.
money AS (
  SELECT coalesce(c.cid, r.cid) AS cid,
         c.conversions, c.gross_revenue,
         r.refunds, r.refund_amount, r.chargebacks, r.chargeback_amount, r.refunded_conversions
  FROM conv AS c
  FULL JOIN refs AS r ON r.cid = c.cid
)
SELECT arrow_cast(hour, 'Timestamp(Microsecond, Some("UTC"))') AS hour,
       source, campaign, link, country, device, clicks, cost, conversions,
       gross_revenue, refunds, refund_amount, chargebacks, chargeback_amount,
       refunded_conversions, CAST(hour AS DATE) AS date
FROM (
  SELECT date_bin(INTERVAL '1 hour', k.ts) AS hour,
         k.source, k.campaign, k.link, k.country, k.device,
         count(*) AS clicks,
         CAST(sum(k.cost) AS DECIMAL(18, 4)) AS cost,
         CAST(coalesce(sum(m.conversions), 0) AS BIGINT) AS conversions,
         CAST(coalesce(sum(m.gross_revenue), 0) AS DECIMAL(18, 4)) AS gross_revenue,
         CAST(coalesce(sum(m.refunds), 0) AS BIGINT) AS refunds,
         CAST(coalesce(sum(m.refund_amount), 0) AS DECIMAL(18, 4)) AS refund_amount,
         CAST(coalesce(sum(m.chargebacks), 0) AS BIGINT) AS chargebacks,
         CAST(coalesce(sum(m.chargeback_amount), 0) AS DECIMAL(18, 4)) AS chargeback_amount,
         CAST(coalesce(sum(m.refunded_conversions), 0) AS BIGINT) AS refunded_conversions
  FROM clicks_dedup AS k
  LEFT JOIN money AS m ON m.cid = k.cid
  GROUP BY date_bin(INTERVAL '1 hour', k.ts), k.source, k.campaign, k.link, k.country, k.device
) AS hourly;
