"""``bulkload load``: ① inputs → ② validate → ③ shard → ④ deliver → ⑤ journal.

::

    reader thread (reader.py)               event loop (one TaskGroup, loader.py)
    ─────────────────────────               ─────────────────────────────────────
    _inputs ─► blocks ─► _validate ─► ShardWriter ─► accept ─► queue ─► upload workers
               (8 MiB)   (or worker   (shard.py:    (journal  (bounded) (deliver.py: import
                         processes,    pieces, md5)  "shard")            call, PUT, journal)
                         pool.py)

    loader.py    Loader (public), the run: reader hand-over, bounded queue, workers, watchdog
    reader.py    the reader thread: blocks → rejects, duplicate ids, shards; load_records
    pool.py      worker processes: started from a fork server, or not used at all
    shard.py     ③ ShardPlanner (pure) and ShardWriter (pieces, fsync, md5 on a helper thread)
    deliver.py   ④ one shard's life: ticket just in time, PUT, renewals, retries, journal
    progress.py  live counters and the Progress a caller sees

Docstring only: importing ``bulkload._load.x`` stays as cheap as ``x`` itself.
"""
