"""Co-engagement counts as a Kafka aggregate: every worker learns from every event, and a
restarted worker keeps what the stream taught.

The rule (``models.cooc.model``: ``CoocModel.additions``, the one place it is written) turns a
user's first engagement with an item into additions to the pair counts. Offline (``replay``,
``evaluate``, ``train``) they are applied in place, event by event. A worker instead:

1. **sends** them (``send_pairs``): the hot path's batch sums them per target item
   (``CoocModel.deltas``: one delta per touched item) and sends them to
   ``<app_id>-cooc-pairs``, each on its item's partition (``item_partition``), once the batch's
   user states and lists are acknowledged, and before its offsets are committed. The deltas of
   one partition travel together, in columns (``stream_app.cooc_pairs``: a message of up to
   ``BUNDLE_BYTES``, keyed by its first item), so a batch sends a few messages instead of one
   per item; the aggregator reads the earlier forms of a pair message as well;
2. **aggregates** them (``CoocAggregator``, group ``stream_app.topics.cooc_group``, a
   ``stream_app.checkpoint.CheckpointedConsumer``): the owner of a pairs partition folds the
   batch's messages into their items' bounded, event-time-decayed neighbour rows
   (``models.cooc.table.RowTable``: all at once, in numpy, in the aggregator's own thread, off
   the event loop) and writes every row a batch touched, once, to the compacted
   ``<app_id>-cooc-rows-changelog`` on the same partition number; then commits. A batch begins
   at most every ``STREAM_RECO_COOC_FOLD_EVERY_S`` (1 s; ``stream_app.bulk.pause_s``): a row
   touched by many worker batches meanwhile is folded and written once, which spares the
   aggregator, the broker and every follower most of the records;
3. **follows** the rows (``CoocFollower``, every worker): all partitions of the rows changelog,
   from the start, for as long as the worker runs; at most every
   ``STREAM_RECO_COOC_APPLY_EVERY_S`` (1 s), and under load less often (``CoocFollower.sync``:
   following every worker's rows takes at most a tenth of the model thread), what arrived
   becomes a round (an item's last record stands for the ones before it, so rows that change
   every batch are applied once per round), applied in the model thread ``APPLY_SLICE`` rows
   before each batch (a batch never waits for a whole round) and by a timer while idle; the
   worker starts only after one read to the end, applied whole. ``/stats`` ``cooc.apply_gap_s``:
   the time between rounds now.
   The served counts are the checkpoint's (fixed) plus the followed rows
   (``models.cooc.rows.OnlineRows``).

Guarantees.

- **Exactly once at the aggregator.** A row record carries the pairs offset of the last message
  folded into it; on assignment the aggregator restores its partitions' rows from the changelog
  (read to the end, under the writer-epoch rules of ``stream_app.fencing``: a former owner's
  late row write is refused, as for user states) before it folds anything, and skips a message
  at or below its row's offset. Its own offsets are committed after the rows are acknowledged.
- **Never doubled at the worker.** A batch's pair messages are sent only after its user states
  are acknowledged: a state that says "applied" exists before its pairs do, so a batch read
  again is skipped by offset (``stream_app.checkpoint``) and sends nothing.
- **The window that stays open.** A worker that stops after its batch's states were acknowledged
  and before its pair messages were (a kill, a broker refusal) has applied those events, and a
  re-read skips them: their pairs are lost, never doubled. So is a fenced member's batch (cut
  off from its group, ``stream_app.fencing``): its pairs are not sent. Closing it would take a
  transaction over the states, the pair messages and the offsets.
- **Every worker converges.** The rows are a sum per item (to rounding; order-independent with
  decay off for the rule's dyadic weights, pruning aside), so one worker and N workers fed the
  same events end with the same rows, and every follower ends in the state of each item's last
  record. Until a worker has read the rows changelog to its end, its lists may lag the counts
  by the rows in flight (``/stats`` ``cooc.follow_lag``).
- A deleted item's online row, and its place in other rows, is freed on every worker
  (``CoocModel.free_item``); the aggregator keeps it until pruning pushes it out. A new model
  (another checkpoint) keeps the online rows: they are keyed by item id, rebuilt from the
  changelog at start, and carried over by id into a model loaded in process
  (``models.cooc.online.carry_rows``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import mode

from stream_app import fencing
from stream_app.checkpoint import CheckpointedConsumer
from stream_app.cooc_pairs import bundle_pairs, entry_items, pair_entries
from stream_app.kafka_clients import security_options
from stream_app.store import UserStore, read_to_end
from stream_app.topics import cooc_group

if TYPE_CHECKING:  # the worker's parts; an aggregator process (stream_app.aggregator) loads none of them
    from models.cooc.online import PairDeltas
    from stream_app.context import Context, RunModel
    from stream_app.processor import Processor

log = logging.getLogger(__name__)

DECODED_MAX = 20_000  # decoded rows the aggregator keeps per partition between batches
APPLY_EVERY_S = 1.0  # a follower applies rows at most this often (STREAM_RECO_COOC_APPLY_EVERY_S)
APPLY_SLICE = 1024  # rows a follower applies before one batch at most (the rest before the next ones)
FOLLOW_SHARE = 0.1  # of the model thread's time, at most, applying followed rows (rounds spaced out past it) ...
MAX_GAP_S = 30.0  # ... until rounds are this far apart


def apply_followed(processor: Processor, rows: list[tuple[str, bytes | None]]) -> None:
    """In the model thread: followed row records into the model serving when the job runs (a
    model switched in meanwhile, ``stream_app.model_watch``, gets them, not the one it replaced).
    The latest event time the rows are valued at moves the item freshness clock
    (``models.freshness``): the rows come from every worker's events, so each worker's clock
    follows the whole cluster's, and a restarted worker has it from the rows read at start,
    before its first event."""
    from models.cooc.online import apply_rows

    model = processor.model
    if model.cooc is not None:
        latest = apply_rows(model.cooc, rows)
        if model.freshness is not None and latest > 0:
            model.freshness.observe(latest)


def send_pairs(ctx: Context, hot, pairs: PairDeltas) -> None:
    """The batch's deltas as pair messages (``bundle_pairs``), sent once every send the batch made
    so far (its user states and lists) is acknowledged; the batch's settling task waits for them
    (``stream_app.checkpoint``), so they are acknowledged before its offsets are committed."""
    from stream_app.catalog import item_partition

    out, topic = hot.outbox, ctx.topics.cooc_pairs
    before = list(out.pending)
    messages = bundle_pairs(pairs, ctx.settings.partitions, item_partition)

    async def after_states() -> None:
        for fut in before:
            await fut  # a failure here fails the batch, as it would without pairs
        if hot.fenced():  # cut off from the group: the next owner applies these events again
            log.warning("%s: this member lost its assignment; %d pair messages not sent", topic, len(pairs))
            return
        sent = [await hot.producer.send(topic, key=key.encode(), value=value, partition=p)
                for p, key, value in messages]
        for fut in sent:
            await fut

    out.pending.append(asyncio.ensure_future(after_states()))


class CoocAggregator(CheckpointedConsumer):
    """The owner of each pairs partition: pair messages -> neighbour rows -> rows changelog."""

    def __init__(self, ctx: Context, **kwargs):
        s = ctx.settings
        self.ctx = ctx
        self.half_life_ms, self.top_m = s.cooc_half_life_s * 1000.0, s.cooc_top_m
        super().__init__(topic=ctx.topics.cooc_pairs, group_id=cooc_group(s), max_records=s.batch_max,
                         every_s=s.cooc_fold_every_s, **ctx.consumer_options(), **kwargs)
        self.rows = UserStore(s.bootstrap_servers, ctx.topics.cooc_rows_changelog, security_options(s))
        self.decoded: dict[int, object] = {}  # partition -> RowTable, as in ``rows`` (a bounded cache)
        self.fold_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cooc-fold")

    async def before_start(self) -> None:
        await super().before_start()
        await self.rows.start()

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.rows.stop()
        self.fold_thread.shutdown(wait=False)

    async def assigned(self, partitions: list[int]) -> None:
        for p in partitions:
            self.decoded.pop(p, None)
        await self.rows.restore(partitions)  # read to the end (and fenced) before anything is folded

    async def revoked(self, partitions: list[int]) -> None:
        self.rows.drop(partitions)
        for p in partitions:
            self.decoded.pop(p, None)

    async def handle(self, records: list) -> None:
        from models.cooc.table import RowTable

        by_partition: dict[int, list] = {}
        for r in records:
            if r.key is None or r.value is None:
                log.warning("%s: record at %d:%d without key or value skipped", self.topic, r.partition, r.offset)
                continue
            try:
                entries = pair_entries(r.key.decode(), r.offset, r.value)
            except ValueError as exc:  # orjson's decode error is one too
                log.warning("%s: record at %d:%d is no pair message (%s): skipped", self.topic, r.partition, r.offset, exc)
                continue
            by_partition.setdefault(r.partition, []).extend(entries)
        work = []
        for p, messages in by_partition.items():
            table = self.decoded.setdefault(p, RowTable())
            if len(table) > DECODED_MAX:
                table.clear()
            stored = {item: self.rows.get(p, item) for item in entry_items(messages) if item not in table}
            work.append((p, table, messages, stored))
        # the fold off the event loop (which drives the hot path's Kafka I/O), in this
        # aggregator's own thread: it touches only the tables, and rebalances wait for the batch
        written = await asyncio.get_running_loop().run_in_executor(
            self.fold_thread, _fold_all, work, self.half_life_ms, self.top_m)
        for p, out in written:
            for item, value in out:  # one record per touched row per batch
                await self.rows.put(self.outbox.send, p, item, value)
        deltas = sum(1 if item is not None else len(d) for w in work for item, _, d in w[2])
        self.ctx.sensor.on_rows_folded(deltas, sum(len(out) for _, out in written))


def _fold_all(work: list, half_life_ms: float, top_m: int) -> list:
    from models.cooc.table import fold_records

    return [(p, fold_records(table, messages, stored, half_life_ms, top_m)) for p, table, messages, stored in work]


class CoocFollower(mode.Service):
    """Every worker's reader of the rows changelog (module doc, 3). Records of a writer epoch
    lower than one already seen in their partition (a former aggregator's late writes) and the
    epoch markers are passed over, as the aggregator's restore passes them over."""

    def __init__(self, bootstrap_servers: str, changelog: str, security: dict | None = None, sensor=None,
                 apply_every_s: float = APPLY_EVERY_S, **kwargs):
        self.bootstrap_servers, self.changelog = bootstrap_servers, changelog
        self.security = security or {}
        self.sensor = sensor
        self.apply_every_s = apply_every_s  # rows are applied to the model at most this often
        self._applied_at = float("-inf")  # when ``sync`` last began a round (time.monotonic)
        self.gap_s = apply_every_s  # between the starts of two rounds: ``apply_every_s``, longer when rounds cost more
        self._round_s = 0.0  # model-thread seconds the round in progress took so far
        self.pending: list = []  # (partition, offset, item id, record | None), in changelog order
        self.highest: dict[int, int] = {}  # partition -> highest writer epoch seen
        self.applied: dict[int, int] = {}  # partition -> next offset applied to the model
        self._round: list = []  # (item id, record | None) of the round being applied, not applied yet
        self._round_records = 0  # records the round stands for
        self._reached: dict[int, int] = {}  # partition -> next offset once the round is applied
        self._lock = asyncio.Lock()
        self._batches = self._batches_seen = 0  # hot-path calls, and as many when the timer last called
        self._restored = False  # the first round (the changelog read at start) is applied whole
        self.caught_up = asyncio.Event()
        self._tps: list = []
        self._reader = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, **self.security, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest")
        await self._reader.start()
        parts = self._reader.partitions_for_topic(self.changelog) or set()
        if not parts:
            await self._reader._client.force_metadata_update()
            parts = self._reader.partitions_for_topic(self.changelog) or set()
        self._tps = [TopicPartition(self.changelog, p) for p in sorted(parts)]
        self._reader.assign(self._tps)
        records = await read_to_end(self._reader, self._tps, self._take)
        read = {p for p, _, _, _ in self.pending}
        for tp in self._tps:  # nothing to apply there: applied up to where the reader stands
            if tp.partition not in read:
                self.applied[tp.partition] = await self._reader.position(tp)
        if self.sensor is not None:
            self.sensor.on_rows_followed(0, dict(self.applied), 0, self.gap_s)
        self._restored = not self.pending  # else the first round applies what was read, whole
        log.info("co-engagement rows changelog read: %d records", records)
        self.caught_up.set()
        self.add_future(self._follow())

    async def on_stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    def _take(self, r) -> None:
        epoch = fencing.epoch_of(r.headers)
        stale = epoch < self.highest.get(r.partition, 0)
        self.highest[r.partition] = max(epoch, self.highest.get(r.partition, 0))
        item = None if stale or r.key is None or r.key == fencing.MARKER_KEY else r.key.decode()
        self.pending.append((r.partition, r.offset, item, r.value))

    async def _follow(self) -> None:
        while not self.should_stop and self._reader is not None:
            try:
                for batch in (await self._reader.getmany(timeout_ms=500)).values():
                    for r in batch:
                        self._take(r)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.should_stop:
                    return
                log.warning("co-engagement rows changelog: %r", exc)
                await asyncio.sleep(0.5)

    def lag(self) -> int:
        """Records of the changelog not yet applied to the model (read or not)."""
        if self._reader is None:
            return 0
        total = 0
        for tp in self._tps:
            hw = self._reader.highwater(tp)
            if hw is not None:
                total += max(0, hw - self.applied.get(tp.partition, 0))
        return total

    async def sync(self, run_model: RunModel, processor: Processor, between_batches: bool = False,
                   batch_in_flight: bool = False) -> None:
        """Apply the rows read so far to the model, in order, in the model thread, in rounds: at
        most once every ``gap_s`` seconds the rows read so far become a round (an item's last
        record in it stands for its earlier ones). ``gap_s`` is ``apply_every_s``, or ten times
        the model-thread time the last round took (``FOLLOW_SHARE``; up to ``MAX_GAP_S``): under
        load rounds come less often, so each item's many records are applied once, and following
        the cluster's rows never takes more than a tenth of the model thread.
        ``between_batches`` (the hot path's call before each batch): at most ``APPLY_SLICE`` rows
        of the round are applied, so a batch never waits for a whole round. Otherwise (the
        one-second timer): a slice too when a batch ran since the timer's last call or one is in
        flight (``batch_in_flight``: a batch of a backlog may take longer than a second); else the
        worker is idle, and the rest of the round is applied, and a new one begun after
        ``apply_every_s`` whatever ``gap_s``. The first round (what was read at start) is
        applied whole. ``applied`` (and the sensor's ``applied_offsets``) advances when a round
        is complete: every record below it is in the model."""
        async with self._lock:  # the timer's call and the hot path's never interleave their slices
            now = time.monotonic()
            if between_batches:
                self._batches += 1
            # idle: no batch in flight, and none began since the timer's last call
            idle = not between_batches and not batch_in_flight and self._batches == self._batches_seen
            if not between_batches:
                self._batches_seen = self._batches
            gap = self.apply_every_s if idle else self.gap_s
            if not self._round and self.pending and now - self._applied_at >= gap:
                self._applied_at = now
                changes, self.pending = self.pending, []
                self._round = list({item: value for _, _, item, value in changes if item is not None}.items())
                self._round_records = sum(1 for c in changes if c[2] is not None)
                for p, offset, _, _ in changes:
                    self._reached[p] = offset + 1
            if not self._reached:
                if self.sensor is not None:
                    self.sensor.on_follow_lag(self.lag())
                return
            take = self._round if idle or not self._restored else self._round[:APPLY_SLICE]
            self._round = self._round[len(take):]
            if take and processor.model.cooc is not None:
                t0 = time.perf_counter()
                await run_model(apply_followed, processor, take)
                self._round_s += time.perf_counter() - t0
            if self._round:
                return
            reached, self._reached = self._reached, {}
            self.applied.update(reached)
            if self._restored:  # the next round waits until this one's cost is FOLLOW_SHARE of the time
                self.gap_s = min(MAX_GAP_S, max(self.apply_every_s, self._round_s / FOLLOW_SHARE))
            self._round_s, self._restored = 0.0, True
            if self.sensor is not None:
                self.sensor.on_rows_followed(self._round_records, reached, self.lag(), self.gap_s)
