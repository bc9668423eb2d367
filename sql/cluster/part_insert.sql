-- Probabilities travel as JSON text and become a DOUBLE[], as in the store.
INSERT INTO part VALUES (?, ?, ?, ?, CAST(? AS DOUBLE[]), ?, ?, ?)
