"""Step snapshots with no storage code: amber.step as a decorator or a
context manager snapshots the step's volumes, all at one instant, when the
step starts (phase=start) and when it ends (phase=end), or when it raises
(phase=failed, error=<exception class>; the exception propagates).

    @amber.step(volumes=["pvc/data", "pvc/model"])
    def train(): ...

    with amber.step(volumes=["pvc/data"], step="prepare") as s:
        ...
    s.start, s.end            # the Snapshot lists

Provenance labels (pipeline, run, step + the orchestrator's own ids) come
from Provenance.from_env(); every argument overrides it."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from .client import Client, Snapshot


@dataclasses.dataclass
class Provenance:
    """Who ran a step: pipeline, run and step names, and extra labels
    (the orchestrator's ids). Empty strings are left out of the labels."""
    pipeline: str = ""
    run: str = ""
    step: str = ""
    extra: Dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Provenance":
        """From the environment, first match wins:
        - AMBER_PIPELINE, AMBER_RUN, AMBER_STEP (set them to override);
        - Argo Workflows: ARGO_WORKFLOW_NAME / ARGO_WORKFLOW_UID (set on the
          executor's containers; pass {{workflow.name}}/{{workflow.uid}} in
          the step's env for the main one), ARGO_NODE_ID (set on the main
          container: WORKFLOW-NAME-<number>), ARGO_TEMPLATE (its JSON has the
          template name), ARGO_POD_NAME/ARGO_POD_UID; run = the workflow's
          name, pipeline = that name without a generateName suffix,
          step = the template's name;
        - Kubeflow Pipelines v2: KFP_RUN_ID / KFP_RUN_NAME / KFP_PIPELINE_NAME /
          KFP_TASK_NAME / KFP_TASK_ID (a component passes the placeholders
          {{$.pipeline_job_uuid}}, {{$.pipeline_job_name}},
          {{$.pipeline_task_name}}, {{$.pipeline_task_uuid}} to amber-step's
          options, since KFP does not export them), KFP_POD_NAME/KFP_POD_UID.
        Labels argo-workflow, argo-workflow-uid, argo-node-id, kfp-run-id,
        kfp-task-id, pod, pod-uid record the ids found."""
        e = os.environ if env is None else env
        g = lambda k: (e.get(k) or "").strip()  # noqa: E731
        extra: Dict[str, str] = {}
        wf, wf_uid, node = g("ARGO_WORKFLOW_NAME"), g("ARGO_WORKFLOW_UID"), g("ARGO_NODE_ID")
        if not wf and node:
            m = re.match(r"^(.*)-\d+$", node)
            wf = m.group(1) if m else ""
        template = ""
        if g("ARGO_TEMPLATE"):
            try:
                template = str(json.loads(g("ARGO_TEMPLATE")).get("name") or "")
            except (ValueError, AttributeError):
                template = ""
        for k, v in (("argo-workflow", wf), ("argo-workflow-uid", wf_uid), ("argo-node-id", node),
                     ("kfp-run-id", g("KFP_RUN_ID")), ("kfp-task-id", g("KFP_TASK_ID")),
                     ("pod", g("KFP_POD_NAME") or g("ARGO_POD_NAME")),
                     ("pod-uid", g("KFP_POD_UID") or g("ARGO_POD_UID"))):
            if v:
                extra[k] = v
        pipeline = (g("AMBER_PIPELINE") or g("KFP_PIPELINE_NAME") or
                    (re.sub(r"-[a-z0-9]{5}$", "", wf) if wf else ""))
        run = g("AMBER_RUN") or g("KFP_RUN_ID") or g("KFP_RUN_NAME") or wf
        step = g("AMBER_STEP") or g("KFP_TASK_NAME") or template
        return cls(pipeline, run, step, extra)

    def labels(self) -> Dict[str, str]:
        out = {k: v for k, v in self.extra.items() if v}
        for k in ("pipeline", "run", "step"):
            v = getattr(self, k)
            if v:
                out[k] = v
        return out


def _volumes_from_env() -> List[str]:
    v = os.environ.get("AMBER_VOLUMES", "")
    return [x.strip() for x in re.split(r"[,\s]+", v) if x.strip()]


class step:
    """Snapshot a step's volumes at its start and end (or failure).

    volumes: the volumes ("pvc/NAME"), default $AMBER_VOLUMES (comma or
    space separated). step, pipeline, run: override the provenance (the
    decorator's step defaults to the function's name when the environment
    names none). labels: more labels. client / socket: which amberd (default
    amber.Client()). freeze: FIFREEZE the mounted filesystems around each
    snapshot (needs the volume mounted on the node).

    After the block: .start and .end are the lists of Snapshot (.end is
    the failed-phase snapshots when it raised), .error the exception."""

    def __init__(self, volumes: Optional[Sequence[str]] = None, *, step: Optional[str] = None,
                 pipeline: Optional[str] = None, run: Optional[str] = None,
                 labels: Optional[Mapping[str, object]] = None, client: Optional[Client] = None,
                 socket: Optional[str] = None, freeze: bool = False,
                 provenance: Optional[Provenance] = None):
        if isinstance(volumes, str):
            volumes = [volumes]
        self.volumes = list(volumes) if volumes else _volumes_from_env()
        self._args = dict(step=step, pipeline=pipeline, run=run, labels=labels, client=client,
                          socket=socket, freeze=freeze, provenance=provenance)
        self.provenance = dataclasses.replace(provenance) if provenance else Provenance.from_env()
        for k, v in (("step", step), ("pipeline", pipeline), ("run", run)):
            if v is not None:
                setattr(self.provenance, k, str(v))
        self.extra_labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self._client, self._socket, self.freeze = client, socket, freeze
        self._own_client: Optional[Client] = None
        self.start: List[Snapshot] = []
        self.end: List[Snapshot] = []
        self.error: Optional[BaseException] = None

    # --- the labels of each phase ---

    def labels(self, phase: str, error: Optional[object] = None) -> Dict[str, str]:
        """The labels of a phase's snapshots; error: an exception (its class
        name is recorded) or a str."""
        out = self.provenance.labels()
        out.update(self.extra_labels)
        out["phase"] = phase
        if error is not None:
            out["error"] = error if isinstance(error, str) else type(error).__name__
        return out

    def _c(self) -> Client:
        if self._client is None:
            self._own_client = self._client = Client(self._socket)
        return self._client

    def _snap(self, phase, error=None) -> List[Snapshot]:
        if not self.volumes:
            raise ValueError("amber.step: no volumes (pass volumes=[\"pvc/NAME\"] or set AMBER_VOLUMES)")
        return self._c().snapshot(self.volumes, labels=self.labels(phase, error), freeze=self.freeze)

    def begin(self) -> List[Snapshot]:
        """The start snapshots (what entering the block does)."""
        self.start = self._snap("start")
        return self.start

    def finish(self, error: Optional[object] = None) -> List[Snapshot]:
        """The end snapshots, or with `error` (an exception or a str) the
        failed ones, whose own failure is then only reported on stderr so
        that it never hides the step's. Closes a client made here."""
        try:
            if error is None:
                self.end = self._snap("end")
            else:
                self.error = error
                try:
                    self.end = self._snap("failed", error)
                except Exception as e:
                    print("amber.step: the failure snapshot failed: %s" % e, file=sys.stderr)
        finally:
            self._close()
        return self.end

    # --- context manager ---

    def __enter__(self) -> "step":
        try:
            self.begin()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, et, ev, tb) -> bool:
        self.finish(ev)
        return False

    def _close(self):
        if self._own_client is not None:
            self._own_client.close()
            self._client = self._own_client = None

    # --- decorator ---

    def __call__(self, fn):
        args = dict(self._args)
        if args["step"] is None and not self.provenance.step:
            args["step"] = fn.__name__

        @functools.wraps(fn)
        def inner(*a, **kw):
            with step(self.volumes, **args):
                return fn(*a, **kw)
        return inner
