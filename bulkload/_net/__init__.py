"""④ ⑥ The wire: the only package that imports aiohttp."""
