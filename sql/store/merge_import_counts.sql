-- What a sharded import merge does, by action and the new row's status.
SELECT action, coalesce(new_status, ''), count(*)
FROM merge_plan
GROUP BY ALL
