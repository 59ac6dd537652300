"""Reading, validating and converting CLUE NER data."""
