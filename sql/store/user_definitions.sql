-- The store's own views and macros with their SQL, checked for functions ad-hoc
-- sessions refuse (a view could otherwise call one on a reader's behalf).
SELECT 'view ' || view_name, coalesce(sql, '')
FROM duckdb_views()
WHERE NOT internal
UNION ALL
SELECT 'macro ' || function_name, coalesce(macro_definition, '')
FROM duckdb_functions()
WHERE function_type IN ('macro', 'table_macro') AND NOT internal
