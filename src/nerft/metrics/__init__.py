"""Scoring model answers: parse them (`parse`), CLUE's set scores (`clue`), seqeval's span scores
(`spans`), and both over a whole file (`evaluate`)."""
