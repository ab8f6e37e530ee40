"""Translation: backends behind one `Translator` interface, segmenting that keeps code and
markup untranslated, a persistent SQLite cache, length-grouped batching and quality filters.

Importing this package is cheap (no torch): backends import their heavy libraries on use.
"""
