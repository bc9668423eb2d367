-- The merge's temp tables, emptied inside its transaction.
DROP TABLE IF EXISTS merge_parts;
DROP TABLE IF EXISTS merge_list;
DROP TABLE IF EXISTS merge_plan;
