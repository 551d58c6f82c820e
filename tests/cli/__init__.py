"""Tests of bulkload.cli, as that package is laid out."""
