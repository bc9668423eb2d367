-- A rater named by an imported file; an existing rater keeps its role.
INSERT INTO raters (name) VALUES (?)
ON CONFLICT (name) DO NOTHING;
