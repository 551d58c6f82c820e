"""Tests of bulkload._follow, as that package is laid out."""
