"""⑤ The work dir: what a run did, durably."""
