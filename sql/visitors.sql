-- visitors: one profile row per visitor ID (docs/design.md §5 and §7), from visitor_clicks,
-- converting_clicks, conversions_dedup and refunds_dedup. A conversion or refund belongs to
-- the visitor of its click; refunds of unknown clicks belong to no visitor. first_seen and
-- last_seen are the visitor's first and last click.
CREATE OR REPLACE VIEW visitors AS
WITH conv AS (
  SELECT k.vid, count(*) AS conversions, sum(c.amount) AS gross_revenue
  FROM conversions_dedup AS c
  JOIN converting_clicks AS k ON k.cid = c.cid
  GROUP BY k.vid
),
refs AS (
  SELECT k.vid,
         count(*) AS refunds,
         sum(r.amount) AS refund_amount,
         sum(CASE WHEN r."type" = 'chargeback' THEN 1 ELSE 0 END) AS chargebacks
  FROM refunds_dedup AS r
  JOIN converting_clicks AS k ON k.cid = r.cid
  GROUP BY k.vid
),
-- The money of each visitor with a conversion or a refund, in the table's types, so the
-- visitors are joined once and only these few rows are cast.
money AS (
  SELECT coalesce(c.vid, r.vid) AS vid,
         CAST(coalesce(c.conversions, 0) AS BIGINT) AS conversions,
         CAST(coalesce(c.gross_revenue, 0) AS DECIMAL(18, 4)) AS gross_revenue,
         CAST(coalesce(r.refunds, 0) AS BIGINT) AS refunds,
         CAST(coalesce(r.refund_amount, 0) AS DECIMAL(18, 4)) AS refund_amount,
         CAST(coalesce(r.chargebacks, 0) AS BIGINT) AS chargebacks,
         CAST(coalesce(c.gross_revenue, 0) - coalesce(r.refund_amount, 0) AS DECIMAL(18, 4))
           AS net_revenue
  FROM conv AS c
  FULL JOIN refs AS r ON r.vid = c.vid
)
SELECT s.vid, s.first_seen, s.last_seen, s.clicks,
       coalesce(m.conversions, CAST(0 AS BIGINT)) AS conversions,
       coalesce(m.gross_revenue, CAST(0 AS DECIMAL(18, 4))) AS gross_revenue,
       coalesce(m.refunds, CAST(0 AS BIGINT)) AS refunds,
       coalesce(m.refund_amount, CAST(0 AS DECIMAL(18, 4))) AS refund_amount,
       coalesce(m.chargebacks, CAST(0 AS BIGINT)) AS chargebacks,
       coalesce(m.net_revenue, CAST(0 AS DECIMAL(18, 4))) AS net_revenue
FROM visitor_clicks AS s
LEFT JOIN money AS m ON m.vid = s.vid;
