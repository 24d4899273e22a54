-- refund_links: every deduplicated refund with the conversion it refunds (docs/design.md §4),
-- from refunds_dedup, conversions_dedup and converting_clicks (a refund's click, when known,
-- is among them).
-- A refund links to the conversion of the same click whose txid equals its `ref`; otherwise
-- (no ref, or no match) to the click's earliest conversion by (ts, txid). Columns added:
--   linked             a conversion was found (false: the click has no conversion yet)
--   conversion_txid, conversion_ts, conversion_amount   the linked conversion
--   unmatched          no click with this cid is known (kept, never dropped)
--   over_refund        the refunds linked to that conversion, up to and including this one
--                      (by ts, then txid, amount, type, ref), exceed its amount
--   vid, source, click_ts   the click's visitor, traffic source and time (null when unmatched)
CREATE OR REPLACE VIEW refund_links AS
WITH first_conversion AS (
  -- Only the clicks with a refund need theirs.
  SELECT cid, txid, ts, amount
  FROM (
    SELECT cid, txid, ts, amount,
           row_number() OVER (PARTITION BY cid ORDER BY ts, txid NULLS FIRST) AS nth
    FROM conversions_dedup
    WHERE cid IN (SELECT cid FROM refunds_dedup)
  ) AS numbered
  WHERE nth = 1
),
linked AS (
  SELECT r.cid, r.ts, r.amount, r.txid, r."type", r."ref",
         (m.cid IS NOT NULL OR f.cid IS NOT NULL) AS linked,
         CASE WHEN m.cid IS NOT NULL THEN m.txid ELSE f.txid END AS conversion_txid,
         CASE WHEN m.cid IS NOT NULL THEN m.ts ELSE f.ts END AS conversion_ts,
         CASE WHEN m.cid IS NOT NULL THEN m.amount ELSE f.amount END AS conversion_amount,
         k.cid IS NULL AS unmatched,
         k.vid, k.source, k.ts AS click_ts
  FROM refunds_dedup AS r
  LEFT JOIN conversions_dedup AS m ON m.cid = r.cid AND m.txid = r."ref"
  LEFT JOIN first_conversion AS f ON f.cid = r.cid
  LEFT JOIN converting_clicks AS k ON k.cid = r.cid
)
SELECT cid, ts, amount, txid, "type", "ref", linked,
       conversion_txid, conversion_ts, conversion_amount, unmatched, vid, source, click_ts,
       linked AND sum(amount) OVER (
         PARTITION BY cid, linked, conversion_txid
         ORDER BY ts, txid NULLS FIRST, amount, "type", "ref" NULLS FIRST
         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) > conversion_amount AS over_refund
FROM linked;
