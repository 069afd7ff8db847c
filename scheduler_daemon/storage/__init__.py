"""Storage: the database, the batched recorder, the journal, read queries, the embedded server."""
