"""Tests of bulkload._inputs, as that package is laid out."""
