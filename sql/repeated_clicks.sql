-- repeated_clicks: the click IDs that occur more than once in the raw `clicks` table (imports
-- from other trackers can bring a click twice). Usually empty; clicks_dedup ranks only these.
CREATE OR REPLACE VIEW repeated_clicks AS
SELECT cid FROM clicks GROUP BY cid HAVING count(*) > 1;
