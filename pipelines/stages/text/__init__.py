"""Text helpers only stages use: word and line statistics, n-grams, an n-gram index."""
