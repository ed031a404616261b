"""The pool's configuration file: flavors, priority classes, orgs and their quotas,
nodes (one by one or as compact groups) and the policy knobs.

Everything a user writes is loaded through ``load_yaml``: safe loading only, a size
limit, and a guard against alias bombs, so a hostile or broken file fails in
milliseconds with a message naming the field and the line.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields as dataclass_fields
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scheduler.core.admission import never_runs
from values.decisions import PreemptReason
from values.domain import DEFAULT_PRIORITY_CLASSES, Flavor, JobSpec, Node, PriorityClass, TopologyPath
from values.errors import ConfigError, Problem, validation_problems
from values.names import Name
from values.progress import ProgressRule
from values.quotas import Org
from values.snapshot import DEFAULT_ACTIONS, Ordering, PendingJob, Policy, RunningJob, Snapshot, WithinOrg
from values.strict import Bool, Int, Number
from values.validation import ValidationRule

MAX_POOL_NODES = 100_000
MAX_FILE_BYTES = 5 * 1024 * 1024
# A 5 MB file of explicit nodes has well under a million YAML nodes; a "billion laughs"
# file of a few hundred bytes expands to far more, and is refused before expansion.
MAX_YAML_NODES = 1_000_000
MAX_YAML_DEPTH = 64

M = TypeVar("M", bound=BaseModel)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeGroup(_Frozen):
    """``count`` identical nodes spread over ``spines`` x ``racks_per_spine`` racks.

    Node ``i`` goes to rack ``i * racks // count`` (contiguous blocks, as a data-centre
    row is filled), so the same group always expands to the same names and racks.
    Groups that share a ``topology_prefix`` share spines and racks (mixed racks).
    """

    flavor: Name
    count: Int = Field(ge=1, le=MAX_POOL_NODES)
    accelerators: Int = Field(ge=0, le=64)
    cpu: Number = Field(64.0, ge=0, le=100_000)
    memory_gb: Number = Field(512.0, ge=0, le=1_000_000)
    zone: Name = "zone-a"
    spines: Int = Field(1, ge=1, le=1024)
    racks_per_spine: Int = Field(1, ge=1, le=1024)
    # Short enough that "<prefix>-s<spine>-r<rack>" stays a valid 63-character name.
    name_prefix: Name | None = Field(None, max_length=40)
    topology_prefix: Name | None = Field(None, max_length=40)

    @property
    def racks(self) -> int:
        return self.spines * self.racks_per_spine

    def node_names(self) -> list[str]:
        prefix = self.name_prefix or self.flavor
        width = max(2, len(str(self.count - 1)))
        return [f"{prefix}-{i:0{width}d}" for i in range(self.count)]

    def expand(self) -> list[Node]:
        topo = self.topology_prefix or self.name_prefix or self.flavor
        nodes = []
        for i, name in enumerate(self.node_names()):
            spine, rack = divmod(i * self.racks // self.count, self.racks_per_spine)
            path = TopologyPath(zone=self.zone, spine=f"{topo}-s{spine}", rack=f"{topo}-s{spine}-r{rack}")
            nodes.append(
                Node(
                    name=name,
                    flavor=self.flavor,
                    accelerators=self.accelerators,
                    cpu=self.cpu,
                    memory_gb=self.memory_gb,
                    topology=path,
                )
            )
        return nodes


class PolicyConfig(_Frozen):
    """The ``policy:`` section; mirrors ``values.snapshot.Policy`` field by field."""

    ordering: Ordering = Ordering.FAIR
    within_org: WithinOrg = WithinOrg.RESPONSE_RATIO
    borrowing: Bool = True
    reclaim: Bool = True
    priority_preemption: Bool = True
    backfill: Bool = True
    strict_order: Bool = False
    half_life_seconds: Number = Field(7 * 86_400.0, gt=0, le=10 * 365 * 86_400)
    move_off_unhealthy: Bool = True
    min_runtime_yields_to: tuple[PreemptReason, ...] = (PreemptReason.HEALTH,)
    grow_after_seconds: Number = Field(1800.0, ge=0, le=30 * 86_400)
    actions: tuple[str, ...] = Field(DEFAULT_ACTIONS, min_length=1, max_length=32)

    @field_validator("min_runtime_yields_to")
    @classmethod
    def _reclaim_waits(cls, reasons: tuple[PreemptReason, ...]) -> tuple[PreemptReason, ...]:
        if PreemptReason.RECLAIM in reasons:
            raise ValueError("reclaim always waits for a job's min_runtime_seconds; it cannot be listed")
        return reasons

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from scheduler.core.actions import ACTIONS, unknown

        missing = unknown(names)
        if missing:
            raise ValueError(f"unknown action {missing[0]!r}; the actions are {', '.join(ACTIONS)}")
        twice = [n for n, k in Counter(names).items() if k > 1]
        if twice:
            raise ValueError(f"action {twice[0]!r} is listed twice")
        return names

    def to_policy(self) -> Policy:
        return Policy(**{f.name: getattr(self, f.name) for f in dataclass_fields(Policy)})


class PoolConfig(_Frozen):
    """A whole pool. Shape errors come from pydantic; cross-references are checked
    after (``_cross_check``) and raise ``ConfigError`` with the offending field's path."""

    name: Name = "pool"
    description: str = Field("", max_length=2000)
    flavors: tuple[Flavor, ...] = Field(min_length=1, max_length=256)
    priority_classes: tuple[PriorityClass, ...] = Field(DEFAULT_PRIORITY_CLASSES, min_length=1)
    orgs: tuple[Org, ...] = Field(min_length=1, max_length=10_000)
    nodes: tuple[Node, ...] = Field((), max_length=MAX_POOL_NODES)
    node_groups: tuple[NodeGroup, ...] = Field((), max_length=10_000)
    policy: PolicyConfig = PolicyConfig()
    progress: ProgressRule = ProgressRule()
    validation: ValidationRule = ValidationRule()

    @model_validator(mode="after")
    def _cross_check(self) -> PoolConfig:
        problems = _cross_check(self)
        if problems:
            # Not a ValueError on purpose: pydantic would flatten it to one message
            # without paths; ConfigError keeps one path per problem.
            raise ConfigError(problems)
        return self

    @cached_property
    def all_nodes(self) -> tuple[Node, ...]:
        """Explicit nodes first, then every group's nodes, in file order."""
        expanded = [node for group in self.node_groups for node in group.expand()]
        return (*self.nodes, *expanded)

    def capacity(self) -> dict[str, int]:
        """Accelerators per flavor (every flavor listed, 0 where it has no nodes)."""
        cap = dict.fromkeys((f.name for f in self.flavors), 0)
        for node in self.all_nodes:
            cap[node.flavor] += node.accelerators
        return cap

    def priority_value(self, name: str) -> int:
        for pc in self.priority_classes:
            if pc.name == name:
                return pc.value
        known = ", ".join(pc.name for pc in self.priority_classes)
        raise ConfigError([("priority", f"unknown priority class '{name}' (this pool has: {known})")])

    def pending_job(
        self, spec: JobSpec, *, submitted_at: float, job_id: str | None = None, eligible_at: float = 0.0
    ) -> PendingJob:
        return PendingJob(
            id=job_id or spec.name,
            spec=spec,
            priority=self.priority_value(spec.priority),
            submitted_at=submitted_at,
            eligible_at=eligible_at,
        )

    def snapshot(
        self,
        pending: Iterable[PendingJob] = (),
        running: Iterable[RunningJob] = (),
        usage: Mapping[str, Mapping[str, float]] | None = None,
    ) -> Snapshot:
        return Snapshot(
            flavors=self.flavors,
            nodes=self.all_nodes,
            orgs=self.orgs,
            running=tuple(running),
            pending=tuple(pending),
            usage=usage or {},
            policy=self.policy.to_policy(),
        )


def _duplicates(names: Sequence[str], path: str, what: str) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for i, name in enumerate(names):
        if name in first:
            problems.append((f"{path}[{i}].name", f"duplicate {what} '{name}' (also {path}[{first[name]}])"))
        first.setdefault(name, i)
    return problems


def _cross_check(config: PoolConfig) -> list[Problem]:
    flavors = [f.name for f in config.flavors]
    known = set(flavors)
    listing = ", ".join(flavors)
    problems = _duplicates(flavors, "flavors", "flavor")
    problems += _duplicates([p.name for p in config.priority_classes], "priority_classes", "priority class")
    problems += _duplicates([o.name for o in config.orgs], "orgs", "org")
    for i, org in enumerate(config.orgs):
        problems += _duplicates([t.name for t in org.teams], f"orgs[{i}].teams", "team")
        for flavor in org.quotas:
            if flavor not in known:
                problems.append(
                    (f"orgs[{i}].quotas.{flavor}", f"unknown flavor '{flavor}' (flavors: {listing})")
                )
    node_flavors = [(f"nodes[{i}]", n.flavor) for i, n in enumerate(config.nodes)]
    node_flavors += [(f"node_groups[{i}]", g.flavor) for i, g in enumerate(config.node_groups)]
    for path, flavor in node_flavors:
        if flavor not in known:
            problems.append((f"{path}.flavor", f"unknown flavor '{flavor}' (flavors: {listing})"))
    total = len(config.nodes) + sum(g.count for g in config.node_groups)
    if total > MAX_POOL_NODES:
        problems.append(("node_groups", f"the pool would have {total} nodes; the limit is {MAX_POOL_NODES}"))
        return problems
    return problems + _node_name_clashes(config)


def _node_name_clashes(config: PoolConfig) -> list[Problem]:
    owner: dict[str, str] = {}
    problems = []
    named = [(f"nodes[{i}].name", [n.name]) for i, n in enumerate(config.nodes)]
    named += [(f"node_groups[{i}]", g.node_names()) for i, g in enumerate(config.node_groups)]
    for path, names in named:
        for name in names:
            if name in owner:
                problems.append((path, f"node name '{name}' is already used by {owner[name]}"))
                break  # one line per group is enough to see the clash
            owner[name] = path.removesuffix(".name")
    return problems


def warnings(config: PoolConfig) -> list[str]:
    """Things that load but probably are not what the operator meant."""
    out = []
    cap = config.capacity()
    nominal: Counter[str] = Counter()
    for org in config.orgs:
        for flavor, quota in org.quotas.items():
            nominal[flavor] += quota.nominal
    for flavor, total in cap.items():
        if total == 0:
            out.append(
                f"flavor '{flavor}' has no accelerators in the pool: jobs asking only for it never run"
            )
        if nominal[flavor] > total:
            out.append(
                f"flavor '{flavor}': nominal quotas sum to {nominal[flavor]} accelerators but the pool has "
                f"{total}; not every org can get its guaranteed share at once"
            )
    if "normal" not in {p.name for p in config.priority_classes}:
        out.append("no priority class 'normal': jobs that do not name a priority cannot be queued")
    for i, group in enumerate(config.node_groups):
        if group.count < group.racks:
            out.append(f"node_groups[{i}]: {group.count} nodes over {group.racks} racks leaves racks empty")
    spines_of_rack: defaultdict[str, set[str]] = defaultdict(set)
    for node in config.all_nodes:
        spines_of_rack[node.topology.rack].add(node.topology.spine)
    for rack, spines in sorted(spines_of_rack.items()):
        if len(spines) > 1:
            out.append(f"rack '{rack}' appears under several spines ({', '.join(sorted(spines))})")
    return out


def job_warnings(spec: JobSpec) -> list[str]:
    """What in a job spec loads but is not honoured everywhere."""
    out = []
    if spec.image is not None:
        out.append(
            f"image '{spec.image}' is used by the kubernetes backend only: on the ray backend the "
            "command runs in the Ray workers' environment and the image is ignored"
        )
    return out


def validate_model(model: type[M], data: Any, source: str, root: Any = None) -> M:
    """``model.model_validate(data)``; every problem as a ``ConfigError`` naming the field."""
    if not isinstance(data, dict):
        kind = "empty file" if data is None else type(data).__name__
        raise ConfigError([("", f"expected a mapping (key: value) at the top level, got {kind}")], source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, model)
    except ConfigError as exc:
        problems = exc.problems
    lines = {path: line for path, _ in problems if (line := line_of_path(root, path)) is not None}
    raise ConfigError(problems, source, lines)


def parse_pool_config(text: str, source: str = "<text>") -> PoolConfig:
    data, root = load_yaml(text, source)
    return validate_model(PoolConfig, data, source, root)


def load_pool_config(path: str | Path) -> PoolConfig:
    return parse_pool_config(read_text(Path(path)), str(path))


def load_job_spec(source: str | Path) -> JobSpec:
    """A job spec from a file (a ``Path``, or a one-line string ending in .yaml/.yml)
    or from YAML text (any other string)."""
    if isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml")):
        source = Path(source)
    if isinstance(source, Path):
        text, name = read_text(source), str(source)
    else:
        text, name = source, "<text>"
    data, root = load_yaml(text, name)
    return validate_model(JobSpec, data, name, root)


# --- safe YAML -------------------------------------------------------------------------

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path) -> str:
    """A user file's text, refusing anything over ``MAX_FILE_BYTES`` before reading it."""
    source = str(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ConfigError([("", "not a regular file")], source)
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                [("", f"file is {size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")], source
            )
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([("", exc.strerror or str(exc))], source) from None
    if len(raw) > MAX_FILE_BYTES:  # grew between stat and read
        raise ConfigError([("", f"file is over the {MAX_FILE_BYTES // 2**20} MiB limit")], source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text (byte {exc.start})")], source) from None


def load_yaml(text: str, source: str = "<text>") -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one YAML document, with the guards above.

    The document is first composed into a node graph, in which an alias is a shared
    node: its expanded size is computed without expanding it, so a bomb is refused
    in time proportional to the file, not to what it would expand to.
    """
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError([("", f"text is over the {MAX_FILE_BYTES // 2**20} MiB limit")], source)
    loader = _SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_graph(root, source)
        return loader.construct_document(root), root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([("", f"invalid YAML: {where}{exc.problem or exc}")], source) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, most controls)
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        what = f"character {_codepoint(exc.character)} is not allowed"
        raise ConfigError([("", f"invalid YAML: line {line}, column {column}: {what}")], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"invalid YAML: {exc}")], source) from None
    except RecursionError:
        raise ConfigError(
            [("", f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels")], source
        ) from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_graph(root: yaml.Node, source: str) -> None:
    """Refuse recursive aliases, deep nesting, huge expansions and duplicate keys."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    aliased = False
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                what = "expands through aliases to" if aliased else "has"
                bomb = " (an alias bomb?)" if aliased else ""
                raise _graph_error(node, source, f"{what} more than {MAX_YAML_NODES:,} values{bomb}")
            continue
        if key in sizes:
            aliased = True  # a node reached a second time: it is shared through an alias
            continue
        if key in on_path:
            raise _graph_error(node, source, "an alias refers to the node that contains it")
        if depth > MAX_YAML_DEPTH:
            raise _graph_error(node, source, f"nested deeper than {MAX_YAML_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            _check_keys(node, source)
            _keys_as_text(node)
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node))


def _check_keys(node: yaml.MappingNode, source: str) -> None:
    # PyYAML keeps the last of two equal keys without a word; a silently dropped
    # quota row is worse than an error.
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                raise _graph_error(key, source, f"duplicate key '{key.value}'")
            seen.add(key.value)


_BOOL_TAG, _STR_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:str"


def _keys_as_text(node: yaml.MappingNode) -> None:
    # YAML 1.1 reads a plain (unquoted: no style) `on`, `off`, `yes` or `no` as a boolean,
    # also as a key; every key in our files is a name, so `restart.on` stays the text "on".
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag == _BOOL_TAG and not key.style:
            key.tag = _STR_TAG


def _codepoint(character: int | str) -> str:
    return f"U+{character if isinstance(character, int) else ord(character):04X}"


def _graph_error(node: yaml.Node, source: str, message: str) -> ConfigError:
    return ConfigError([("", f"invalid YAML: line {node.start_mark.line + 1}: {message}")], source)


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def line_of_path(root: yaml.Node | None, path: str) -> int | None:
    """The 1-based line of ``orgs[2].quotas.h100`` in the document, or of the deepest
    part of it that exists (a missing field's line is its parent's)."""
    node = root
    if node is None:
        return None
    for index, key in _PATH_PART.findall(path):
        child = _child(node, int(index) if index else key)
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _child(node: yaml.Node, part: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return value
    return None


def job_problems(config: PoolConfig, spec: JobSpec) -> list[Problem]:
    """What would keep ``spec`` from ever running in this pool: an unknown org, team,
    flavor or priority, or what the core would reject (larger than the pool or than its
    org may ever hold); ``validate --pool`` says so before submitting."""
    problems: list[Problem] = []
    org = next((o for o in config.orgs if o.name == spec.org), None)
    if org is None:
        problems.append(("org", f"unknown org '{spec.org}' (orgs: {', '.join(o.name for o in config.orgs)})"))
    elif spec.team is not None and spec.team not in {t.name for t in org.teams}:
        teams = ", ".join(t.name for t in org.teams) or "none"
        problems.append(("team", f"org '{org.name}' has no team '{spec.team}' (teams: {teams})"))
    known = {f.name for f in config.flavors}
    for i, flavor in enumerate(spec.gang.flavors):
        if flavor not in known:
            problems.append(
                (f"gang.flavors[{i}]", f"unknown flavor '{flavor}' (flavors: {', '.join(sorted(known))})")
            )
    try:
        priority = config.priority_value(spec.priority)
    except ConfigError as exc:
        return problems + exc.problems
    if not problems and (rejected := never_runs(config.snapshot(), spec, priority)) is not None:
        problems.append(("gang", f"can never run in this pool: {rejected.message} ({rejected.reason.value})"))
    return problems
