"""① INPUT specs → sources → blocks of whole lines."""
