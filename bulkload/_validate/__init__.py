"""② Blocks → records and rejects, by the line rules; light to import."""
