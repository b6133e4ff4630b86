"""RunStageFn/RunStage against the fake OpenAI server: every element ends exactly once."""

from __future__ import annotations

import json
import logging
import pathlib

import apache_beam as beam
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, GlobalWindow, TimestampedValue

from beam_pipeline.run_stage import RunStage, RunStageFn, pair_with_annotation
from beam_pipeline.stores import FileSystemsStore
from comvint.llm.backends import api_key_from_env
from comvint.llm.batch import batch_groups
from comvint.llm.client import Reply
from comvint.llm.config import LLMConfig
from comvint.llm.runner import Call
from comvint.records import pack
from comvint.stages.base import OK, REJECTED
from comvint.testing.fake_openai import FakeOpenAI, echo_json, last_user_message
from tests.beam_pipeline.helpers import local_pipeline

SECRET = "sk-test-do-not-leak-1234567890"
SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string"}},
    "required": ["echo"],
    "additionalProperties": False,
}
FAULTS = {
    "q1": ["429", None],
    "q2": ["500", None],
    "q3": ["truncated"] * 9,
    "q4": ["400"],
    "q5": ["invalid_json", None],
    "q6": ["drop", None],
}


def faults(body, attempt):
    seq = FAULTS.get(last_user_message(body), [])
    return seq[attempt - 1] if attempt - 1 < len(seq) else None


class EchoBackend:
    """A backend answering from the call's context alone (as the offline engine does), without an endpoint."""

    name = "offline"

    async def complete(self, call, model, max_tokens=None, seed=None):
        return Reply(text=json.dumps(call.context), finish_reason="stop")

    async def close(self):
        return None


class EchoStage:
    """Asks the model to echo the item's text; rejects items whose text starts with 'bad'."""

    name = "echo"

    def calls(self, item, ann):
        return [
            Call(
                item["id"],
                self.name,
                [{"role": "user", "content": item["text"]}],
                "echo",
                SCHEMA,
                "v1",
                {"echo": item["text"]},
            )
        ]

    def handle(self, item, ann, replies):
        tag = REJECTED if replies[0]["echo"].startswith("bad") else OK
        yield tag, {**item, "echo": replies[0]["echo"]}


def _items(n):
    return [
        {
            "id": f"i{k}",
            "source": "visual_genome",
            "image_id": str(k),
            "text": f"q{k}" if k < 7 else f"bad{k}" if k == 7 else f"q{k}",
        }
        for k in range(n)
    ]


def _config(server, tmp_path, **kw):
    return LLMConfig(
        backend="openai",
        base_url=server.base_url,
        max_retries=2,
        timeout=5,
        concurrency=4,
        cache_dir=str(tmp_path / "cache"),
        backoff_base=0.001,
        backoff_cap=0.002,
        **kw,
    )


def test_run_stage_with_faults_every_element_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    items = _items(12)
    with FakeOpenAI(echo_json, faults) as server:
        with local_pipeline() as p:
            result = p | beam.Create(items) | RunStage(EchoStage(), _config(server, tmp_path))
            assert_that(
                result.ok | "OkIds" >> beam.Map(lambda r: r["id"]),
                equal_to([f"i{k}" for k in (0, 1, 2, 5, 6, 8, 9, 10, 11)]),
                label="Ok",
            )
            assert_that(result.rejected | "RejIds" >> beam.Map(lambda r: r["id"]), equal_to(["i7"]), label="Rejected")
            assert_that(
                result.failed
                | "FailIds" >> beam.Map(lambda f: (f.item_id, f.reason, f.image_id, bool(f.raw_response))),
                equal_to([("i3", "echo_exhausted_retries", "3", True), ("i4", "echo_permanent_error", "4", False)]),
                label="Failed",
            )
            result.usage | beam.Map(lambda u: u) | "WriteUsage" >> beam.io.WriteToText(str(tmp_path / "usage"))
        assert server.authorizations == {f"Bearer {SECRET}"}
    leaked = [str(path) for path in tmp_path.rglob("*") if path.is_file() and SECRET in path.read_text(errors="ignore")]
    assert leaked == []
    assert SECRET not in caplog.text
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 11  # every final reply cached once, the unusable one too


def test_rerun_with_warm_cache_makes_zero_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    items = [{"id": f"i{k}", "source": "visual_genome", "image_id": str(k), "text": f"z{k}"} for k in range(20)]
    with FakeOpenAI(echo_json) as server:
        for _ in range(2):
            with local_pipeline() as p:
                result = p | beam.Create(items) | RunStage(EchoStage(), _config(server, tmp_path))
                assert_that(result.ok | beam.Map(lambda r: r["echo"]), equal_to([f"z{k}" for k in range(20)]))
        assert len(server.requests) == 20


def test_missing_api_key_fails_setup(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        api_key_from_env()
    fn = RunStageFn(EchoStage(), LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        fn.setup()


def test_dofn_lifecycle_offline_rolls_across_elements():
    fn = RunStageFn(
        EchoStage(), LLMConfig(concurrency=2), EchoBackend
    )  # backlog of 4 calls: the 5th element runs the loop
    fn.setup()
    fn.start_bundle()
    during = [list(fn.process((item, item), window=GlobalWindow(), timestamp=k)) for k, item in enumerate(_items(6))]
    last = list(fn.finish_bundle())
    fn.teardown()
    assert [len(out) for out in during[:4]] == [0, 0, 0, 0] and sum(map(len, during)) > 0
    records = [v for out in during for v in out] + [v for v in last if not isinstance(v, TaggedOutput)]
    assert sorted((v.value["echo"], v.timestamp.micros // 10**6) for v in records if v.value["echo"] != "q7") == [
        (f"q{k}", k) for k in range(6)
    ]  # every item once, with its own timestamp
    (usage,) = [v.value.value for v in last if isinstance(v, TaggedOutput)]
    assert usage["echo"]["calls"] == 6


def test_records_keep_their_windows(tmp_path):
    items = _items(6)
    with local_pipeline() as p:
        result = (
            p
            | beam.Create(items)
            | beam.Map(lambda it: TimestampedValue(it, int(it["image_id"]) * 10))
            | beam.WindowInto(FixedWindows(10))
            | RunStage(EchoStage(), LLMConfig(concurrency=1), backend=EchoBackend)
        )
        windows = result.ok | beam.Map(lambda r, w=beam.DoFn.WindowParam: (r["id"], int(w.start)))
        assert_that(windows, equal_to([(f"i{k}", k * 10) for k in range(6)]))


def test_filesystems_store_is_write_once_under_concurrent_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = FileSystemsStore(str(tmp_path))
    assert store.fast  # local disk: called inline on the event loop
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda v: store.put_if_absent("ab" * 32, f"value-{v}"), range(32)))
    assert wins.count(True) == 1
    assert store.get("ab" * 32) == f"value-{wins.index(True)}"
    assert store.get("cd" * 32) is None
    assert [p.name for p in pathlib.Path(tmp_path).rglob("*") if p.name.startswith(".tmp")] == []


def _secret_store(name):  # stands in for Google Secret Manager (module level: the DoFn pickles it)
    assert name == "projects/p/secrets/openai/versions/3"
    return "sk-from-secret-manager"


def test_the_key_comes_from_a_secret_and_reaches_nothing_but_the_endpoint(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    items = _items(4)
    with FakeOpenAI(echo_json) as server:
        config = _config(server, tmp_path, api_key_secret="projects/p/secrets/openai/versions/3")
        with local_pipeline() as p:
            result = (
                p
                | beam.Create([(it, it) for it in items])
                | beam.ParDo(RunStageFn(EchoStage(), config, read_secret=_secret_store)).with_outputs()
            )
            result[None] | "WriteOk" >> beam.Map(str) | beam.io.WriteToText(str(tmp_path / "ok"))
        assert server.authorizations == {"Bearer sk-from-secret-manager"}
    assert "sk-from-secret-manager" not in caplog.text and "sk-from-secret-manager" not in repr(config)
    assert not [
        p for p in tmp_path.rglob("*") if p.is_file() and "sk-from-secret-manager" in p.read_text(errors="ignore")
    ]
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        RunStageFn(EchoStage(), _config(server, tmp_path)).setup()  # neither a secret nor the variable: a clear error


def test_progress_is_logged_per_stage(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="beam_pipeline.run_stage")
    monkeypatch.setattr(RunStageFn, "PROGRESS_EVERY_S", 0.0)
    fn = RunStageFn(EchoStage(), LLMConfig(concurrency=2), EchoBackend)
    fn.setup()
    fn.start_bundle()
    for k, item in enumerate(_items(3)):
        list(fn.process((item, item), window=GlobalWindow(), timestamp=k))
    list(fn.finish_bundle())
    fn.teardown()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Stage echo:")]
    assert (
        lines and lines[-1].startswith("Stage echo: 3 calls done") and "refusals" in lines[-1] and "$0.00" in lines[-1]
    )


def test_a_stage_is_handed_each_item_beside_its_images_record():
    class AnnotationStage:
        name = "verify"

        def calls(self, item, ann):
            return [
                Call(
                    item["id"],
                    self.name,
                    [{"role": "user", "content": ann["name"]}],
                    "s",
                    SCHEMA,
                    "v1",
                    {"echo": ann["name"]},
                )
            ]

        def handle(self, item, ann, replies):
            yield OK, {**item, "seen": replies[0]["echo"], "same_image": ann["image_id"] == item["image_id"]}

    items = [{"id": f"i{k}", "source": "visual_genome", "image_id": str(k % 2)} for k in range(4)]
    records = [
        {"source": "visual_genome", "image_id": i, "name": name}
        for i, name in (("0", "zero"), ("1", "one"), ("9", "unused"))
    ]
    with local_pipeline() as p:
        anns = p | "Anns" >> beam.Create([(f"visual_genome/{r['image_id']}", pack(r)) for r in records])
        result = (
            p
            | beam.Create(items)
            | RunStage(AnnotationStage(), LLMConfig(concurrency=2), backend=EchoBackend, annotations=anns)
        )
        assert_that(
            result.ok
            | beam.Map(
                lambda r: (
                    r["id"],
                    r["seen"],
                    r["same_image"],
                    set(r) - {"seen", "same_image"} == {"id", "source", "image_id"},
                )
            ),
            equal_to(
                [
                    ("i0", "zero", True, True),
                    ("i1", "one", True, True),
                    ("i2", "zero", True, True),
                    ("i3", "one", True, True),
                ]
            ),
        )


def test_the_items_of_an_image_share_one_unpacked_record():
    packed = pack({"source": "visual_genome", "image_id": "0"})
    pairs = list(
        pair_with_annotation(("visual_genome/0", {"ann": [packed], "items": [pack({"id": "i0"}), pack({"id": "i1"})]}))
    )
    assert (
        [item["id"] for item, _ in pairs] == ["i0", "i1"]
        and pairs[0][1] is pairs[1][1]
        and pairs[0][1]["image_id"] == "0"
    )
    assert (
        list(pair_with_annotation(("visual_genome/9", {"ann": [packed], "items": []}))) == []
    )  # a record no item needs


@pytest.mark.parametrize("annotations", [[], [b"a", b"b"]])
def test_an_item_without_exactly_one_image_record_is_a_bug_that_fails_loudly(annotations):
    with pytest.raises(ValueError, match="annotation records for image"):
        list(pair_with_annotation(("visual_genome/0", {"ann": annotations, "items": [pack({"id": "i0"})]})))


def test_batch_groups_follow_both_limits():
    config = LLMConfig(backend="openai", mode="batch", cache_dir="c", batch_max_requests=100, batch_max_mb=1.0)
    assert batch_groups((0, 0), config) == 1
    assert batch_groups((90, 1000), config) == 1 and batch_groups((91, 1000), config) == 2
    assert batch_groups((10, 3 << 20), config) == 4  # 3 MB at 0.9 MB a file
