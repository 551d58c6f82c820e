"""Tests of bulkload._ledger, as that package is laid out."""
