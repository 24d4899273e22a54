-- pgbench script for the ingest baseline: the mix of bench/postbacks.lua (clicks, conversions
-- and refunds in equal parts), each postback one row committed on its own.
\set n random(1, 2000000000)
\set k random(0, 2)
\if :k = 0
INSERT INTO clicks (cid, vid, ts, source, campaign, country, cost)
VALUES ('c-' || :client_id || '-' || :n, 'v' || :n, now(), 'src' || (:n % 7), 'c1', 'DE', 0.0123);
\elif :k = 1
INSERT INTO conversions (cid, ts, amount, txid)
VALUES ('bench-' || :client_id || '-' || :n, now(), 49.99, 't-' || :client_id || '-' || :n)
ON CONFLICT DO NOTHING;
\else
INSERT INTO refunds (cid, ts, amount, txid, type)
VALUES ('bench-' || :client_id || '-' || :n, now(), 12.50, 'r-' || :client_id || '-' || :n, 'chargeback')
ON CONFLICT DO NOTHING;
\endif
