"""Benchmarks of bulkload: ``make bench`` runs ``benchmarks.run``; see README.md here."""
