-- clicks_dedup: one row per click ID, from the raw `clicks` table and repeated_clicks.
-- netrev issues every click ID once, but imports from other trackers may bring the same
-- click twice; the earliest copy wins (ties broken by the other columns, so the choice is
-- deterministic; the visitor comes last, so copies that tie on everything the stats table
-- reads count the same whichever wins). Only the repeated click IDs are ranked: sorting every click to find the
-- rare duplicates would cost most of a recompute.
CREATE OR REPLACE VIEW clicks_dedup AS
SELECT cid, vid, ts, source, campaign, link, country, device, cost
FROM clicks
WHERE cid NOT IN (SELECT cid FROM repeated_clicks)
UNION ALL
SELECT cid, vid, ts, source, campaign, link, country, device, cost
FROM (
  SELECT cid, vid, ts, source, campaign, link, country, device, cost,
         row_number() OVER (
           PARTITION BY cid
           ORDER BY ts, source NULLS FIRST, campaign NULLS FIRST, link NULLS FIRST,
                    country NULLS FIRST, device NULLS FIRST, cost, vid) AS copy
  FROM clicks
  WHERE cid IN (SELECT cid FROM repeated_clicks)
) AS numbered
WHERE copy = 1;
