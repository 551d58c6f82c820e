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


def test_errors_share_one_root() -> None:
    for name in bulkload.__all__:
        obj = getattr(bulkload, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, bulkload.BulkloadError), name
    assert issubclass(bulkload.ConfigError, ValueError)
    assert issubclass(bulkload.UsageError, RuntimeError)
