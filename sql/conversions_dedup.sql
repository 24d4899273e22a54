-- conversions_dedup: the raw `conversions` table without retried postbacks (docs/design.md §4).
-- Key: (cid, txid); conversions without a txid count once per cid (NULLs partition together).
-- The earliest copy wins (ties broken by amount, then type, so the choice is deterministic).
-- Only the keys that occur more than once are ranked; the rest pass through. A window over
-- every conversion would cost several times more: DataFusion 55 evaluates a window one
-- partition (here one key, mostly of one row) at a time.
CREATE OR REPLACE VIEW conversions_dedup AS
WITH repeated AS (
  SELECT cid, txid FROM conversions GROUP BY cid, txid HAVING count(*) > 1
)
SELECT cid, ts, amount, txid, "type"
FROM conversions AS c
WHERE NOT EXISTS (
  SELECT 1 FROM repeated AS r WHERE r.cid = c.cid AND r.txid IS NOT DISTINCT FROM c.txid)
UNION ALL
SELECT cid, ts, amount, txid, "type"
FROM (
  SELECT c.cid, c.ts, c.amount, c.txid, c."type",
         row_number() OVER (
           PARTITION BY c.cid, c.txid ORDER BY c.ts, c.amount, c."type" NULLS FIRST) AS copy
  FROM conversions AS c
  JOIN repeated AS r ON r.cid = c.cid AND r.txid IS NOT DISTINCT FROM c.txid
) AS numbered
WHERE copy = 1;
