"""Durable state: the SQLite write-ahead journal, its schema, and recovery at start-up."""
