-- An existing rater whose name equals ?1 but for case, when ?1 is not a rater itself:
-- a new rater `Alice` beside `alice` is a typing mistake far more often than a person.
SELECT name FROM raters
WHERE lower(name) = lower(?1) AND name <> ?1
  AND NOT EXISTS (SELECT 1 FROM raters WHERE name = ?1)
ORDER BY name
LIMIT 1
