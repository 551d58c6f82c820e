"""⑥ `status` and `wait`: after the upload."""
