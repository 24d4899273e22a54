-- refunds_dedup: the raw `refunds` table without retried postbacks (docs/design.md §4).
-- Key: (cid, txid); refunds without a txid are keyed by (cid, type, ref, amount).
-- The earliest copy wins (ties broken by amount, type and ref, so the choice is deterministic).
CREATE OR REPLACE VIEW refunds_dedup AS
SELECT cid, ts, amount, txid, "type", "ref"
FROM (
  SELECT cid, ts, amount, txid, "type", "ref",
         row_number() OVER (
           PARTITION BY cid, txid,
                        CASE WHEN txid IS NULL THEN "type" END,
                        CASE WHEN txid IS NULL THEN "ref" END,
                        CASE WHEN txid IS NULL THEN amount END
           ORDER BY ts, amount, "type", "ref" NULLS FIRST) AS copy
  FROM refunds
) AS numbered
WHERE copy = 1;
