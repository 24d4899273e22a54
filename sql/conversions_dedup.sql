-- conversions_dedup: the raw `conversions` table without retried postbacks (DESIGN.md 4).
-- Key: (cid, txid); conversions without a txid count once per cid (NULLs partition together).
-- The earliest copy wins (ties broken by amount, then type, so the choice is deterministic).
CREATE OR REPLACE VIEW conversions_dedup AS
SELECT cid, ts, amount, txid, "type"
FROM (
  SELECT cid, ts, amount, txid, "type",
         row_number() OVER (PARTITION BY cid, txid ORDER BY ts, amount, "type" NULLS FIRST) AS copy
  FROM conversions
) AS numbered
WHERE copy = 1;
