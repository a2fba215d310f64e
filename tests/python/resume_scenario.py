#!/usr/bin/env python3
"""The resume scenario, end to end, through a Python client generated from proto/.

1. Generates the client with grpc_tools.protoc into a temp dir (the generated
   modules import each other as `reprise.v1.*`, so that dir goes on sys.path).
2. Starts the real server with its built-in worker:
   `target/debug/reprise dev --listen 127.0.0.1:PORT --database-url sqlite://TMP/reprise.db`.
3. Creates a pipeline build -> canary (four parallel workflows, one of which
   fails until a marker file exists) -> rollout, starts it and watches it
   until FAILED; creates the marker; previews and then performs a Resume from
   the canary stage; watches the resume until SUCCEEDED; checks that build was
   carried over (not run again), that the whole canary stage ran again, and
   that ListHistory shows both attempts, newest first.
4. Stops the server, also when a check fails.

Needs grpcio and grpcio-tools (.ci/python-client.sh installs them in a venv)
and the debug binary that `cargo test` or `cargo build` leaves in target/debug.
Usage: python tests/python/resume_scenario.py [--binary PATH]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WATCH_TIMEOUT_S = 60


class CheckFailed(Exception):
    pass


class Checks:
    def __init__(self) -> None:
        self.passed = 0

    def __call__(self, ok: bool, what: str) -> None:
        if not ok:
            raise CheckFailed(what)
        self.passed += 1
        print(f"ok   {what}")


def generate_client(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    protos = sorted(glob.glob(os.path.join(REPO, "proto", "reprise", "v1", "*.proto")))
    if not protos:
        sys.exit(f"no .proto files under {REPO}/proto/reprise/v1")
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(REPO, "proto"),
               f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *protos]
    subprocess.run(command, check=True)
    sys.path.insert(0, out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`reprise dev` in a child process of its own process group."""

    def __init__(self, binary: str, tmp: str) -> None:
        self.port = free_port()
        self.log_path = os.path.join(tmp, "server.log")
        self.log = open(self.log_path, "w")
        command = [binary, "dev", "--listen", f"127.0.0.1:{self.port}",
                   "--database-url", f"sqlite://{tmp}/reprise.db"]
        print(f"starting: {' '.join(command)}")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        env={**os.environ, "NO_COLOR": "1"})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, grpc, channel, timeout_s: float = 30) -> None:
        """Waits until the gRPC port answers, failing early if the server exits."""
        ready = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise CheckFailed(f"server exited with code {self.process.returncode} before serving")
            try:
                ready.result(timeout=0.2)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise CheckFailed(f"server did not accept connections on {self.address} within {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def log_tail(self, lines: int = 40) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])


def watch_until_final(stub, pb, execution_id: str):
    """WatchExecution until the stream ends (the execution reached a final state)."""
    last = None
    request = pb.WatchExecutionRequest(execution_id=execution_id)
    for message in stub.WatchExecution(request, timeout=WATCH_TIMEOUT_S):
        last = message.execution
    return last


def scenario(server: Server, marker_dir: str, check: Checks) -> None:
    import grpc
    from reprise.v1 import (execution_pb2, execution_service_pb2, execution_service_pb2_grpc, pipeline_pb2,
                            pipeline_service_pb2, pipeline_service_pb2_grpc)

    ex, es, pl, ps = execution_pb2, execution_service_pb2, pipeline_pb2, pipeline_service_pb2
    channel = grpc.insecure_channel(server.address)
    pipelines = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
    executions = execution_service_pb2_grpc.ExecutionServiceStub(channel)
    server.wait_ready(grpc, channel)

    marker = os.path.join(marker_dir, "fixed")
    non_prod = pl.Environment(name="staging", type=pl.ENVIRONMENT_TYPE_NON_PROD)
    prod = pl.Environment(name="prod", type=pl.ENVIRONMENT_TYPE_PROD)
    build_marker = os.path.join(marker_dir, "build-runs")
    definition = pl.PipelineDefinition(
        description="resume scenario from the Python client",
        stages=[
            # Counts its runs in a file: a carried-over stage must not run again.
            pl.Stage(name="build", environment=non_prod, workflows=pl.WorkflowStage(workflows=[
                pl.Workflow(name="compile", command=f"echo run >> '{build_marker}'")])),
            pl.Stage(name="canary", environment=prod, workflows=pl.WorkflowStage(workflows=[
                pl.Workflow(name="eu-1", command="echo eu-1"),
                pl.Workflow(name="eu-2", command="echo eu-2"),
                pl.Workflow(name="us-1", command="echo us-1"),
                pl.Workflow(name="smoke", command=f"test -f '{marker}'"),
            ])),
            pl.Stage(name="rollout", environment=prod, workflows=pl.WorkflowStage(workflows=[
                pl.Workflow(name="all", command="echo deployed $REPRISE_ARTIFACT_WEB")])),
        ],
    )
    created = pipelines.CreatePipeline(
        ps.CreatePipelineRequest(application="shop", name=f"resume-{uuid.uuid4().hex[:8]}", definition=definition),
        timeout=10)
    pipeline = created.pipeline
    check(pipeline.version == 1 and len(pipeline.definition.stages) == 3, "CreatePipeline: version 1 with 3 stages")

    started = executions.StartExecution(
        es.StartExecutionRequest(pipeline_id=pipeline.id, artifacts={"web": "1.2.3"}, request_id=str(uuid.uuid4())),
        timeout=10).execution
    first = watch_until_final(executions, es, started.id)
    check(first is not None and first.status == ex.EXECUTION_STATUS_FAILED,
          f"WatchExecution ends with the first attempt FAILED (got {ex.ExecutionStatus.Name(first.status) if first else None})")
    stages = {s.name: s for s in first.stages}
    check([stages[n].status for n in ("build", "canary", "rollout")]
          == [ex.STAGE_STATUS_SUCCEEDED, ex.STAGE_STATUS_FAILED, ex.STAGE_STATUS_NOT_RUN],
          "first attempt: build SUCCEEDED, canary FAILED, rollout NOT_RUN")
    canary = {w.name: w for w in stages["canary"].workflows}
    check(canary["smoke"].status == ex.WORKFLOW_STATUS_FAILED and canary["smoke"].exit_code != 0,
          "the marker-checking workflow failed with a non-zero exit code")
    check(all(canary[n].status == ex.WORKFLOW_STATUS_SUCCEEDED for n in ("eu-1", "eu-2", "us-1")),
          "its three parallel siblings succeeded")

    got = executions.GetExecution(es.GetExecutionRequest(execution_id=first.id), timeout=10).execution
    check({s.name: s.resume_point.resumable for s in got.stages} == {"build": True, "canary": True, "rollout": False},
          "GetExecution: build and canary are resume points, rollout (never reached) is not")

    open(marker, "w").close()

    preview = executions.Resume(
        es.ResumeRequest(execution_id=first.id, stage_name="canary", validate_only=True), timeout=10)
    check(not preview.HasField("execution"), "Resume validate_only creates nothing")
    plan = [(p.name, p.action) for p in preview.plan]
    check(plan == [("build", es.PLANNED_ACTION_CARRY_OVER), ("canary", es.PLANNED_ACTION_RUN),
                   ("rollout", es.PLANNED_ACTION_RUN)], "the plan carries build over and runs canary and rollout")
    check(sorted(preview.plan[1].workflows) == ["eu-1", "eu-2", "smoke", "us-1"],
          "the plan runs all four canary workflows again")

    request_id = str(uuid.uuid4())
    resumed = executions.Resume(
        es.ResumeRequest(execution_id=first.id, stage_name="canary", request_id=request_id), timeout=10).execution
    retried = executions.Resume(
        es.ResumeRequest(execution_id=first.id, stage_name="canary", request_id=request_id), timeout=10).execution
    check(retried.id == resumed.id, "a retried Resume with the same request id returns the same execution")
    check(resumed.attempt == 2 and resumed.chain_id == first.id and resumed.resumed_from.execution_id == first.id,
          "the resume is attempt 2 of the first execution's chain")

    second = watch_until_final(executions, es, resumed.id)
    check(second is not None and second.status == ex.EXECUTION_STATUS_SUCCEEDED,
          f"WatchExecution ends with the resume SUCCEEDED (got {ex.ExecutionStatus.Name(second.status) if second else None})")
    stages = {s.name: s for s in second.stages}
    check(stages["build"].carried_over and stages["build"].carried_from_execution_id == first.id
          and stages["build"].status == ex.STAGE_STATUS_SUCCEEDED,
          "build was carried over from the first attempt with its result")
    with open(build_marker) as f:
        check(f.read().count("run") == 1, "build ran once in all (not again on resume)")
    check(not stages["canary"].carried_over and len(stages["canary"].workflows) == 4
          and all(w.status == ex.WORKFLOW_STATUS_SUCCEEDED for w in stages["canary"].workflows),
          "all four canary workflows ran again and succeeded")
    check(stages["rollout"].status == ex.STAGE_STATUS_SUCCEEDED, "rollout ran and succeeded")

    history = executions.ListHistory(es.ListHistoryRequest(execution_id=first.id), timeout=10)
    entries = [(e.execution_id, e.attempt, e.status) for e in history.entries]
    check(entries == [(second.id, 2, ex.EXECUTION_STATUS_SUCCEEDED), (first.id, 1, ex.EXECUTION_STATUS_FAILED)],
          "ListHistory: 2 attempts, newest first (SUCCEEDED resume, FAILED original)")
    check(history.chain_id == first.id and history.entries[0].resumed_from.stage_name == "canary",
          "ListHistory: chain id is the first execution, the resume came from canary")
    channel.close()


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.environ.get("REPRISE_BIN", os.path.join(REPO, "target", "debug", "reprise")))
    args = parser.parse_args()
    if not (os.path.isfile(args.binary) and os.access(args.binary, os.X_OK)):
        print(f"FATAL: {args.binary} is missing; build it first (`cargo test` or `cargo build`)", file=sys.stderr)
        return 2

    tmp = tempfile.mkdtemp(prefix="reprise-py-")
    check = Checks()
    failed = None
    server = None
    try:
        generate_client(os.path.join(tmp, "gen"))
        print(f"generated the Python client into {tmp}/gen")
        os.makedirs(os.path.join(tmp, "markers"))
        server = Server(args.binary, tmp)
        try:
            scenario(server, os.path.join(tmp, "markers"), check)
        finally:
            server.stop()
    except CheckFailed as e:
        failed = str(e)
    except Exception as e:  # a gRPC error or a crash is a failure too, with its reason
        failed = f"{type(e).__name__}: {e}"
    if failed:
        print(f"FAIL {failed}")
        if server is not None:
            print(f"--- last lines of the server log ({server.log_path}):\n{server.log_tail()}")
        print(f"resume-scenario: {check.passed} passed, 1 failed")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"resume-scenario: {check.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
