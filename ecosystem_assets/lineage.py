"""Which upstream materialization a step reads, and where a materialization writes its files.

Every artifact an asset writes lives under a key that contains the id of the run that
materialized it (`run_key`), and the materialization's metadata says where (`STORAGE_KEY`). A
downstream asset or a check never reads a fixed "current" file: it asks for the upstream
materialization Dagster's lineage points to (`upstream`) and reads the key recorded there:

- the materialization made by **this run**, or else by the nearest run this one re-executes (a
  re-execution, from failure or of selected steps, has a new run id and a `parent_run_id`: it
  continues its parent, so a job that builds a dataset and trains on it trains on that dataset,
  even when the training is re-executed after another run materialized the same asset);
- otherwise the **latest** materialization in the instance **whose blocking checks passed** (what
  the UI shows as the asset's current state, unless its gate failed).

Blocking checks. An asset is recorded as materialized before its checks judge it (an
`AssetCheckResult` yielded after the `MaterializeResult`, or an `@asset_check` step after the
asset's step). Dagster stops the steps downstream *in that run*; a later run that reads "the
latest" would take the rejected data. So the latest is the newest materialization for which
every blocking check of the asset (from the job's asset graph, as defined in code) has an
evaluation of that materialization, and the newest such evaluation did not fail with ERROR
severity (a failed WARN lets the data through, as Dagster does). A blocking check that never
evaluated a materialization (its run failed or was stopped first, the check was left out of the
run, or it is still running) does not count as passed: that materialization is skipped too. The
newest `CANDIDATES` materializations are considered; when none qualifies, `MissingUpstream` says
which runs were refused and why.

This run's (or its parent chain's) materialization is read unless a blocking check failed on it in
that chain: then the step fails rather than mix in another run's data. One the chain never
checked is read (as Dagster itself would run this step: a run that includes the check runs it
before any step downstream). A step never gates the asset it materializes or checks itself: a
check judges the newest materialization, passed or not, and an asset reading its own previous
materialization reads the newest.

Which materialization an evaluation judged: the one its metadata names (`input/<asset>`, which
this project's checks record through `lineage_metadata`), else the one with the `storage_key` it
records, else Dagster's target materialization (run id and timestamp).

Two runs at once therefore each read their own data. The chosen record's run id and storage key
go into the reader's metadata (`lineage_metadata`), so the UI shows which file a result came from.
Cost per read: one event-log query for this run (and one per ancestor of a re-execution); when
the latest is read, one for the materializations and, for an asset with blocking checks, one per
blocking check (its `HISTORY` newest executions), plus one per materialization whose own run's
evaluations are older than that history (and one per partition whose newest did not pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

STORAGE_KEY = "storage_key"  # metadata entry: the artifact's key in ArtifactStorage
CANDIDATES = 20  # the newest materializations of an asset (per partition) considered for the latest that passed its checks
HISTORY = 100  # the newest executions of each blocking check looked at
MAX_ANCESTORS = 100  # re-executions of re-executions followed at most this far back
FAILED, NOT_EVALUATED = "failed", "never evaluated it"


class MissingUpstream(dg.Failure):
    """The upstream asset (or some of its partitions: ``missing``) has no materialization to read:
    never materialized, or none that passed its blocking checks."""

    def __init__(self, description: str, missing: Iterable[str] = (), refused: Iterable[str] = ()) -> None:
        super().__init__(description=description)
        self.missing = list(missing)  # partitions with nothing to read (never materialized or refused)
        self.refused = list(refused)  # of those, the ones materialized but refused by a blocking check


@dataclass(frozen=True)
class Upstream:
    """One materialization of an upstream asset: where it came from and what it recorded."""

    asset_key: dg.AssetKey
    run_id: str
    storage_id: int  # event id in the storage that returned it (SQLite: a run's own file differs from the index)
    partition: str | None
    metadata: Mapping[str, Any]  # plain values (MetadataValue.value)
    timestamp: float  # when the materialization was recorded (the same in every storage)

    @property
    def storage_key(self) -> str:
        key = self.metadata.get(STORAGE_KEY)
        if not isinstance(key, str):
            raise dg.Failure(
                description=f"materialization of {self.asset_key.to_user_string()} in run {self.run_id} "
                f"records no {STORAGE_KEY!r}: re-materialize it"
            )
        return key


def run_key(prefix: str, run_id: str, name: str) -> str:
    """``prefix/<run_id>/name``: the key of a file written by the run ``run_id``."""
    return f"{prefix.rstrip('/')}/{run_id}/{name}"


def _upstream(entry: Any, storage_id: int) -> Upstream:
    """The materialization in the event-log entry ``entry``."""
    materialization = entry.dagster_event.step_materialization_data.materialization
    return Upstream(
        materialization.asset_key,
        entry.run_id,
        storage_id,
        materialization.partition,
        {k: v.value for k, v in materialization.metadata.items()},
        entry.timestamp,
    )


@dataclass(frozen=True)
class _Evaluation:
    """One evaluation of a check of the upstream asset, and how to tell which materialization it judged."""

    check: str
    run_id: str
    timestamp: float
    failed: bool  # failed with ERROR severity: what stops the steps downstream
    partition: str | None
    named: tuple[tuple[str, str | None], ...] | None  # (run id, partition) of `input/<asset>`, when recorded
    storage_key: str | None  # the `storage_key` the check recorded
    target: tuple[str, float] | None  # Dagster's target materialization: (run id, timestamp)

    def judges(self, materialization: Upstream) -> bool:
        if self.partition is not None and self.partition != materialization.partition:
            return False
        if self.named is not None:
            return any(run == materialization.run_id and part in (None, materialization.partition) for run, part in self.named)
        if self.storage_key is not None and materialization.metadata.get(STORAGE_KEY) is not None:
            return self.storage_key == materialization.metadata.get(STORAGE_KEY)
        return self.target == (materialization.run_id, materialization.timestamp)


def _evaluation(entry: Any, key: dg.AssetKey) -> _Evaluation | None:
    """The evaluation in the event-log entry ``entry`` if it is one of a check of ``key``."""
    event = entry.dagster_event if entry is not None else None
    if event is None or event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        return None
    data = event.asset_check_evaluation_data
    if data.asset_key != key:
        return None
    named = data.metadata.get(f"input/{key.to_user_string()}")
    entries = named.value if named is not None else None
    entries = [entries] if isinstance(entries, dict) else entries
    runs = None
    if isinstance(entries, list):
        runs = tuple((e["run_id"], e.get("partition")) for e in entries if isinstance(e, dict) and isinstance(e.get("run_id"), str))
    recorded = data.metadata.get(STORAGE_KEY)
    storage_key = recorded.value if recorded is not None and isinstance(recorded.value, str) else None
    target = data.target_materialization_data
    return _Evaluation(
        check=data.check_name,
        run_id=entry.run_id,
        timestamp=entry.timestamp,
        failed=not data.passed and data.severity == dg.AssetCheckSeverity.ERROR,
        partition=data.partition,
        named=runs,
        storage_key=storage_key,
        target=(target.run_id, target.timestamp) if target is not None else None,
    )


def _blocking_checks(context: Any, key: dg.AssetKey) -> list[dg.AssetCheckKey]:
    """The blocking checks of ``key`` as the code defines them; none when this step materializes or
    checks ``key`` itself (it reads the newest, whatever its checks said)."""
    op_context = getattr(context, "op_execution_context", context)
    if op_context.has_assets_def:
        own = op_context.assets_def
        if key in own.keys or any(check.asset_key == key for check in own.check_keys):
            return []
    # The whole code location's graph (a job's graph holds only what it selected). Dagster has no public
    # way to it from a step under execute_in_process, where `context.repository_def` is unset.
    graph = op_context.job_def.asset_layer.asset_graph.source_asset_graph
    if not graph.has(key):
        return []
    return sorted((check for check in graph.get(key).check_keys if graph.get_check_spec(check).blocking), key=lambda c: c.name)


class _Choice:
    """Chooses the materializations of one upstream asset that a step reads."""

    def __init__(self, context: Any, key: dg.AssetKey) -> None:
        self.instance: dg.DagsterInstance = context.instance
        self.run = context.run
        self.key = key
        self.name = key.to_user_string()
        self.checks = _blocking_checks(context, key)
        self._evaluations: dict[tuple[str, str, float], _Evaluation] = {}
        self._runs: dict[str, dict[str | None, Upstream]] = {}
        self._history_loaded = False

    # What the instance recorded, each looked up once.

    def _add(self, entry: Any) -> None:
        evaluation = _evaluation(entry, self.key)
        if evaluation is not None:
            self._evaluations[(evaluation.check, evaluation.run_id, evaluation.timestamp)] = evaluation

    def _of_run(self, run_id: str) -> dict[str | None, Upstream]:
        """The materializations of the asset the run made, newest per partition (and its check evaluations)."""
        if run_id not in self._runs:
            types = {dg.DagsterEventType.ASSET_MATERIALIZATION}
            if self.checks:
                types.add(dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            found: dict[str | None, Upstream] = {}
            for record in self.instance.get_records_for_run(run_id, of_type=types).records:
                event = record.event_log_entry.dagster_event
                if event is not None and event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and event.asset_key == self.key:
                    item = _upstream(record.event_log_entry, record.storage_id)
                    found[item.partition] = item
                else:
                    self._add(record.event_log_entry)
            self._runs[run_id] = found
        return self._runs[run_id]

    def _load_history(self) -> None:
        """The newest executions of each blocking check (a planned one holds no evaluation yet)."""
        if not self._history_loaded:
            self._history_loaded = True
            storage = self.instance.event_log_storage
            for check in self.checks:
                for row in storage.get_asset_check_execution_history(check, limit=HISTORY):
                    self._add(row.event)

    # Verdicts.

    def _judge(self, materialization: Upstream) -> tuple[str, str] | None:
        """(check, FAILED or NOT_EVALUATED) for a blocking check it did not pass, a failed one first, per the
        evaluations loaded; None when it passed them all."""
        unjudged = None
        for check in self.checks:
            judging = [e for e in self._evaluations.values() if e.check == check.name and e.judges(materialization)]
            if not judging:
                unjudged = unjudged or (check.name, NOT_EVALUATED)
            elif max(judging, key=lambda e: e.timestamp).failed:
                return check.name, FAILED
        return unjudged

    def _problem(self, materialization: Upstream) -> tuple[str, str] | None:
        """Why ``materialization`` is not read as the latest (None: it passed its blocking checks)."""
        if not self.checks:
            return None
        self._load_history()
        verdict = self._judge(materialization)
        if verdict is not None and verdict[1] == NOT_EVALUATED:
            self._of_run(materialization.run_id)  # checked in its own run, longer ago than the checks' history
            verdict = self._judge(materialization)
        return verdict

    def _first_passed(self, candidates: Sequence[Upstream]) -> tuple[Upstream | None, list[tuple[Upstream, tuple[str, str]]]]:
        refused: list[tuple[Upstream, tuple[str, str]]] = []
        for candidate in candidates:
            problem = self._problem(candidate)
            if problem is None:
                return candidate, refused
            refused.append((candidate, problem))
        return None, refused

    # Choices.

    def in_lineage(self, partitions: Iterable[str | None]) -> dict[str | None, Upstream]:
        """Per partition, the materialization made by this run, else by the nearest run it re-executes.
        Fails when a blocking check failed on it."""
        wanted = set(partitions)
        found: dict[str | None, Upstream] = {}
        run, followed = self.run, 0
        while run is not None and wanted - found.keys():
            for partition, item in self._of_run(run.run_id).items():
                if partition in wanted:
                    found.setdefault(partition, item)
            followed += 1
            parent = run.parent_run_id
            run = self.instance.get_run_by_id(parent) if parent and followed <= MAX_ANCESTORS else None
        for item in found.values():
            verdict = self._judge(item) if self.checks else None
            if verdict is not None and verdict[1] == FAILED:
                whose = "this run" if item.run_id == self.run.run_id else "the run this one re-executes"
                where = f" for {item.partition}" if item.partition is not None else ""
                raise MissingUpstream(
                    description=f"{self.name}{where} materialized by {whose} ({item.run_id}) failed its blocking check "
                    f"{verdict[0]}: not reading it. Fix what the check reports, then materialize {self.name} again.",
                    missing=[item.partition] if item.partition is not None else [],
                )
        return found

    def latest(self) -> Upstream:
        """The newest materialization of the unpartitioned asset that passed its blocking checks."""
        records = self.instance.fetch_materializations(self.key, limit=CANDIDATES if self.checks else 1).records
        if not records:
            raise MissingUpstream(description=f"{self.name} has not been materialized yet: materialize it first")
        chosen, refused = self._first_passed([_upstream(r.event_log_entry, r.storage_id) for r in records])
        if chosen is None:
            raise MissingUpstream(
                description=f"{self.name} has no materialization that passed its blocking checks among its newest "
                f"{len(records)}: {_reasons(refused)}. Materialize {self.name} again (with its checks) first."
            )
        return chosen

    def latest_partitions(self, partitions: list[str]) -> tuple[dict[str, Upstream], dict[str, list[tuple[Upstream, tuple[str, str]]]]]:
        """Per partition, the newest materialization that passed the blocking checks; and, per partition
        with materializations but none that passed, the refused ones."""
        latest = self.instance.get_latest_storage_id_by_partition(self.key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions))
        ids = [latest[p] for p in partitions if p in latest]
        found: dict[str, Upstream] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for record in self.instance.fetch_materializations(
                dg.AssetRecordsFilter(self.key, storage_ids=chunk), limit=len(chunk)
            ).records:
                item = _upstream(record.event_log_entry, record.storage_id)
                if item.partition is not None:
                    found[item.partition] = item
        refused: dict[str, list[tuple[Upstream, tuple[str, str]]]] = {}
        for partition, newest in list(found.items()):
            problem = self._problem(newest)
            if problem is None:
                continue
            del found[partition]
            older = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(self.key, asset_partitions=[partition], before_storage_id=newest.storage_id), limit=CANDIDATES - 1
            ).records
            chosen, more = self._first_passed([_upstream(r.event_log_entry, r.storage_id) for r in older])
            if chosen is not None:
                found[partition] = chosen
            else:
                refused[partition] = [(newest, problem), *more]
        return found, refused


def _reasons(refused: list[tuple[Upstream, tuple[str, str]]], shown: int = 3) -> str:
    text = "; ".join(f"run {item.run_id}: {check} {problem}" for item, (check, problem) in refused[:shown])
    return text + (f"; and {len(refused) - shown} more" if len(refused) > shown else "")


def upstream(context: Any, asset: str | dg.AssetKey) -> Upstream:
    """The materialization of the unpartitioned ``asset`` this step reads (this run's or its parent
    chain's, else the latest that passed its blocking checks). ``context``: an asset, op or
    asset-check execution context."""
    choice = _Choice(context, dg.AssetKey.from_coercible(asset))
    own = choice.in_lineage([None]).get(None)
    return own if own is not None else choice.latest()


def upstream_partitions(context: Any, asset: str | dg.AssetKey, partitions: Iterable[str]) -> dict[str, Upstream]:
    """Per partition of ``asset``: the materialization this step reads (this run's or its parent
    chain's, else the latest that passed its blocking checks). Raises MissingUpstream naming the
    partitions never materialized and those with no materialization that passed."""
    key = dg.AssetKey.from_coercible(asset)
    wanted = list(dict.fromkeys(partitions))
    choice = _Choice(context, key)
    found: dict[str, Upstream] = {p: item for p, item in choice.in_lineage(wanted).items() if p is not None}
    rest = [p for p in wanted if p not in found]
    refused: dict[str, list[tuple[Upstream, tuple[str, str]]]] = {}
    if rest:
        latest, refused = choice.latest_partitions(rest)
        found.update(latest)
    missing = [p for p in wanted if p not in found and p not in refused]
    problems = []
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        problems.append(
            f"{key.to_user_string()} has no materialization for {len(missing)} partition(s): {shown}; materialize (backfill) them first"
        )
    if refused:
        listed = [f"{p} ({_reasons(r, shown=1)})" for p, r in list(refused.items())[:10]]
        shown = ", ".join(listed) + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
        problems.append(
            f"{key.to_user_string()} has no materialization that passed its blocking checks for {len(refused)} "
            f"partition(s): {shown}; materialize them again (with their checks) first"
        )
    if problems:
        raise MissingUpstream(description="; ".join(problems), missing=[p for p in wanted if p not in found], refused=list(refused))
    return {p: found[p] for p in wanted}


def lineage_metadata(*sources: Upstream) -> dict[str, Any]:
    """Metadata naming the upstream materializations a result was computed from: one entry per
    upstream asset (``input/<asset>``), with run id and storage key (per partition when partitioned)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for source in sources:
        # The run id names the materialization everywhere; storage ids differ between SQLite's run and index files.
        entry = {"run_id": source.run_id, STORAGE_KEY: source.metadata.get(STORAGE_KEY)}
        if source.partition is not None:
            entry = {"partition": source.partition, **entry}
        grouped.setdefault(source.asset_key.to_user_string(), []).append(entry)
    return {
        f"input/{name}": dg.MetadataValue.json(entries[0] if len(entries) == 1 and "partition" not in entries[0] else entries)
        for name, entries in grouped.items()
    }
