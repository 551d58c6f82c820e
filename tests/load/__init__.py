"""Tests of bulkload._load, as that package is laid out."""
