#!/usr/bin/env python3
"""The resume scenario through a Python client generated from proto/.

Against a running `reprise dev` (server and reference worker in one process,
on this machine: the shell tasks below run here), it creates a pipeline
build -> canary (four parallel workflows; `smoke` fails until a marker file
exists) -> rollout, starts it and watches it fail, previews and runs a Resume
from canary, watches the resume succeed, lists the chain's history, and
decodes the error details of a refused Resume. Prints each check, then
`N passed, M failed`; exits non-zero on any failure.

Generate the client first (grpcio-tools bundles protoc):

    python -m grpc_tools.protoc -I proto --python_out=gen --pyi_out=gen \
        --grpc_python_out=gen proto/reprise/v1/*.proto

then run with `gen` on PYTHONPATH and grpcio-status installed (it brings the
google.rpc types in googleapis-common-protos):

    PYTHONPATH=gen python examples/python/resume_scenario.py \
        --address 127.0.0.1:50051 --workdir /tmp/reprise-example
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from reprise.v1 import error_pb2, execution_pb2 as ex, execution_service_pb2 as es, execution_service_pb2_grpc
from reprise.v1 import pipeline_pb2 as pl, pipeline_service_pb2 as ps, pipeline_service_pb2_grpc

TIMEOUT_S = 10
WATCH_TIMEOUT_S = 60


class Checks:
    """Prints each check; counts what passed and what failed."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")
        return ok


def watch_until_final(executions, execution_id: str):
    """WatchExecution until the stream ends: the execution reached a final state."""
    last = None
    for message in executions.WatchExecution(es.WatchExecutionRequest(execution_id=execution_id),
                                             timeout=WATCH_TIMEOUT_S):
        last = message.execution
    return last


def error_details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo | None,
                                                  error_details_pb2.PreconditionFailure | None]:
    """The ErrorInfo and PreconditionFailure in a refused call's google.rpc.Status."""
    info, failure = None, None
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
    return info, failure


def reason_name(value: int) -> str:
    """An ErrorReason value as ErrorInfo.reason spells it: its name less the prefix."""
    return error_pb2.ErrorReason.Name(value).removeprefix("ERROR_REASON_")


def scenario(address: str, workdir: str, check: Checks) -> None:
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)
    pipelines = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
    executions = execution_service_pb2_grpc.ExecutionServiceStub(channel)

    marker = os.path.join(workdir, "python-fixed")
    builds = os.path.join(workdir, "python-builds")
    staging = pl.Environment(name="staging", type=pl.ENVIRONMENT_TYPE_NON_PROD)
    prod = pl.Environment(name="prod", type=pl.ENVIRONMENT_TYPE_PROD)
    definition = pl.PipelineDefinition(description="resume scenario (Python example)", stages=[
        # Counts its runs: a carried-over stage must not run again.
        pl.Stage(name="build", environment=staging, workflows=pl.WorkflowStage(workflows=[
            pl.Workflow(name="compile", command=f"echo run >> '{builds}'")])),
        pl.Stage(name="canary", environment=prod, workflows=pl.WorkflowStage(workflows=[
            pl.Workflow(name="eu-1", command="echo eu-1"),
            pl.Workflow(name="eu-2", command="echo eu-2"),
            pl.Workflow(name="us-1", command="echo us-1"),
            pl.Workflow(name="smoke", command=f"test -f '{marker}'"),
        ])),
        pl.Stage(name="rollout", environment=prod, workflows=pl.WorkflowStage(workflows=[
            pl.Workflow(name="all", command="echo deployed $REPRISE_ARTIFACT_WEB")])),
    ])
    pipeline = pipelines.CreatePipeline(ps.CreatePipelineRequest(
        application="shop", name=f"resume-py-{uuid.uuid4().hex[:8]}", definition=definition),
        timeout=TIMEOUT_S).pipeline
    check(pipeline.version == 1 and len(pipeline.definition.stages) == 3, "CreatePipeline: version 1 with 3 stages")

    started = executions.StartExecution(es.StartExecutionRequest(
        pipeline_id=pipeline.id, artifacts={"web": "1.2.3"}, request_id=str(uuid.uuid4())), timeout=TIMEOUT_S)
    first = watch_until_final(executions, started.execution.id)
    check(first is not None and first.status == ex.EXECUTION_STATUS_FAILED, "WatchExecution: the first attempt FAILED")
    stages = {s.name: s for s in first.stages}
    canary = {w.name: w for w in stages["canary"].workflows}
    check(stages["canary"].status == ex.STAGE_STATUS_FAILED and canary["smoke"].status == ex.WORKFLOW_STATUS_FAILED
          and all(canary[n].status == ex.WORKFLOW_STATUS_SUCCEEDED for n in ("eu-1", "eu-2", "us-1")),
          "canary FAILED: smoke failed, its three parallel siblings succeeded")

    got = executions.GetExecution(es.GetExecutionRequest(execution_id=first.id), timeout=TIMEOUT_S).execution
    points = {s.name: s.resume_point for s in got.stages}
    check(points["canary"].resumable and not points["rollout"].resumable
          and points["rollout"].block == error_pb2.ERROR_REASON_STAGE_NOT_REACHED,
          "GetExecution: canary is a resume point, rollout is not (STAGE_NOT_REACHED)")

    open(marker, "w").close()  # "fix" the smoke test

    preview = executions.Resume(es.ResumeRequest(execution_id=first.id, stage_name="canary", validate_only=True),
                                timeout=TIMEOUT_S)
    check(not preview.HasField("execution")
          and [(p.name, p.action) for p in preview.plan] == [("build", es.PLANNED_ACTION_CARRY_OVER),
                                                              ("canary", es.PLANNED_ACTION_RUN),
                                                              ("rollout", es.PLANNED_ACTION_RUN)],
          "Resume validate_only: creates nothing; carries build over, runs canary and rollout")

    resumed = executions.Resume(es.ResumeRequest(execution_id=first.id, stage_name="canary",
                                                 request_id=str(uuid.uuid4()), reason="smoke test fixed"),
                                timeout=TIMEOUT_S).execution
    check(resumed.attempt == 2 and resumed.chain_id == first.id, "Resume: attempt 2 of the first execution's chain")

    second = watch_until_final(executions, resumed.id)
    check(second is not None and second.status == ex.EXECUTION_STATUS_SUCCEEDED, "WatchExecution: the resume SUCCEEDED")
    stages = {s.name: s for s in second.stages}
    with open(builds) as f:
        ran_once = f.read().count("run") == 1
    check(stages["build"].carried_over and stages["build"].carried_from_execution_id == first.id and ran_once,
          "build was carried over from the first attempt, not run again")
    check(len(stages["canary"].workflows) == 4
          and all(w.status == ex.WORKFLOW_STATUS_SUCCEEDED for w in stages["canary"].workflows),
          "all four canary workflows ran again and succeeded")

    history = executions.ListHistory(es.ListHistoryRequest(execution_id=first.id), timeout=TIMEOUT_S)
    check([(e.execution_id, e.attempt) for e in history.entries] == [(second.id, 2), (first.id, 1)]
          and history.entries[0].resumed_from.stage_name == "canary",
          "ListHistory: 2 attempts, newest first; the resume came from canary")

    # A refused call: the first execution is no longer the latest of its chain.
    try:
        executions.Resume(es.ResumeRequest(execution_id=first.id, stage_name="canary"), timeout=TIMEOUT_S)
        check(False, "Resume of a resumed execution is refused")
        return
    except grpc.RpcError as error:
        info, failure = error_details(error)
        check(error.code() == grpc.StatusCode.FAILED_PRECONDITION, f"refused: FAILED_PRECONDITION ({error.details()})")
    check(info is not None and info.domain == "reprise.v1"
          and info.reason == reason_name(error_pb2.ERROR_REASON_NOT_LATEST_IN_CHAIN)
          and info.metadata["latest_execution_id"] == second.id,
          f"ErrorInfo: reason {info.reason if info else None}, latest_execution_id names the resume")
    check(failure is not None and failure.violations[0].type == info.reason,
          "PreconditionFailure: the same reason as its violation type")
    old = executions.GetExecution(es.GetExecutionRequest(execution_id=first.id), timeout=TIMEOUT_S).execution
    check(reason_name(old.stages[1].resume_point.block) == info.reason,
          "GetExecution's resume point names the same reason")
    channel.close()


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("REPRISE_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--workdir", default=os.environ.get("REPRISE_EXAMPLE_DIR") or tempfile.mkdtemp())
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    check = Checks()
    try:
        scenario(args.address, args.workdir, check)
    except Exception as e:  # a gRPC error or a crash is a failure too, with its reason
        check(False, f"{type(e).__name__}: {e}")
    print(f"python-example: {check.passed} passed, {check.failed} failed")
    return 0 if check.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
