"""Tests of bulkload._journal, as that package is laid out."""
