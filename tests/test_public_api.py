"""The public surface is pinned: anything else in bulkload may change without notice."""

import bulkload


def test_exported_members() -> None:
    assert sorted(bulkload.__all__) == [
        "ApiError",
        "AuthError",
        "BulkloadError",
        "ConfigError",
        "DiskSpaceError",
        "ExitCode",
        "Follower",
        "Ledger",
        "LedgerBusyError",
        "LedgerError",
        "LoadConfig",
        "LoadResult",
        "Loader",
        "PartitionError",
        "Progress",
        "SourceError",
        "StateError",
        "StatusChange",
        "TooManyRejectsError",
        "UsageError",
        "WaitResult",
        "WorkerError",
        "__version__",
        "load",
        "merge_manifests",
        "partition_inputs",
    ]
    for name in bulkload.__all__:
        assert getattr(bulkload, name) is not None


def test_exports_say_they_are_bulkloads() -> None:
    """Private module paths never show in reprs, tracebacks or docs; pickles still work."""
    import pickle

    for name in bulkload.__all__:
        obj = getattr(bulkload, name)
        if hasattr(obj, "__module__") and name != "__version__":
            assert obj.__module__ == "bulkload", name
    config = bulkload.LoadConfig(shard_max_records=7)
    assert repr(config).startswith("LoadConfig(") and pickle.loads(pickle.dumps(config)) == config
    error = pickle.loads(pickle.dumps(bulkload.StateError("x")))
    assert type(error) is bulkload.StateError


def test_errors_share_one_root() -> None:
    for name in bulkload.__all__:
        obj = getattr(bulkload, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, bulkload.BulkloadError), name
    assert issubclass(bulkload.ConfigError, ValueError)
    assert issubclass(bulkload.UsageError, RuntimeError)
