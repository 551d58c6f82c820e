"""Tests of bulkload._net, as that package is laid out."""
