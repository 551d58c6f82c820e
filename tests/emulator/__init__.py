"""Tests of bulkload.emulator, as that package is laid out."""
