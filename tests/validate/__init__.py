"""Tests of bulkload._validate, as that package is laid out."""
