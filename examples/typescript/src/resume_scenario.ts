// The resume scenario through a TypeScript client generated from proto/
// (protobuf-es) over Connect's gRPC transport for Node.
//
// Against a running `reprise dev` (server and reference worker in one
// process, on this machine: the shell tasks below run here), it creates a
// pipeline build -> canary (four parallel workflows; `smoke` fails until a
// marker file exists) -> rollout, starts it and watches it fail, previews
// and runs a Resume from canary, watches the resume succeed, lists the
// chain's history, and decodes the error details of a refused Resume.
// Prints each check, then `N passed, M failed`; exits non-zero on failure.
//
//   npm ci && npm run generate && npm start
//
// REPRISE_ADDRESS (default 127.0.0.1:50051) names the server,
// REPRISE_EXAMPLE_DIR a directory the worker can see (default: a temp dir).

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ErrorInfoSchema, PreconditionFailureSchema } from "../gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "../gen/reprise/v1/error_pb.js";
import {
  type Execution,
  ExecutionStatus,
  StageStatus,
  WorkflowStatus,
} from "../gen/reprise/v1/execution_pb.js";
import { ExecutionService, PlannedAction } from "../gen/reprise/v1/execution_service_pb.js";
import { EnvironmentType, type Stage } from "../gen/reprise/v1/pipeline_pb.js";
import { PipelineService } from "../gen/reprise/v1/pipeline_service_pb.js";

const address = process.env.REPRISE_ADDRESS ?? "127.0.0.1:50051";
const workdir = process.env.REPRISE_EXAMPLE_DIR ?? mkdtempSync(join(tmpdir(), "reprise-ts-"));
const call = { timeoutMs: 10_000 };

let passed = 0;
let failed = 0;
function check(ok: boolean, what: string): boolean {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  return ok;
}

const transport = createGrpcTransport({ baseUrl: `http://${address}` });
const pipelines = createClient(PipelineService, transport);
const executions = createClient(ExecutionService, transport);

/** WatchExecution until the stream ends: the execution reached a final state. */
async function watchUntilFinal(executionId: string): Promise<Execution | undefined> {
  let last: Execution | undefined;
  for await (const message of executions.watchExecution({ executionId }, { timeoutMs: 60_000 })) {
    last = message.execution;
  }
  return last;
}

/** ErrorInfo.reason of an ErrorReason value: protobuf-es already strips the ERROR_REASON_ prefix. */
const reasonName = (value: ErrorReason): string => ErrorReason[value];

async function scenario(): Promise<void> {
  const marker = join(workdir, "typescript-fixed");
  const staging = { name: "staging", type: EnvironmentType.NON_PROD };
  const prod = { name: "prod", type: EnvironmentType.PROD };
  const stage = (name: string, environment: typeof prod, workflows: [string, string][]) => ({
    name,
    environment,
    kind: { case: "workflows" as const, value: { workflows: workflows.map(([name, command]) => ({ name, command })) } },
  });
  const stages = [
    stage("build", staging, [["compile", "echo compiled"]]),
    stage("canary", prod, [["eu-1", "echo eu-1"], ["eu-2", "echo eu-2"], ["us-1", "echo us-1"], ["smoke", `test -f '${marker}'`]]),
    stage("rollout", prod, [["all", "echo deployed $REPRISE_ARTIFACT_WEB"]]),
  ];
  const { pipeline } = await pipelines.createPipeline(
    { application: "shop", name: `resume-ts-${randomUUID().slice(0, 8)}`, definition: { description: "resume scenario (TypeScript example)", stages } },
    call,
  );
  check(pipeline?.version === 1n && pipeline.definition?.stages.length === 3, "CreatePipeline: version 1 with 3 stages");

  const started = await executions.startExecution(
    { pipelineId: pipeline!.id, artifacts: { web: "1.2.3" }, requestId: randomUUID() },
    call,
  );
  const first = (await watchUntilFinal(started.execution!.id))!;
  check(first.status === ExecutionStatus.FAILED, "WatchExecution: the first attempt FAILED");
  const canary = first.stages.find((s) => s.name === "canary")!;
  const workflow = (name: string) => canary.workflows.find((w) => w.name === name)!;
  check(
    canary.status === StageStatus.FAILED &&
      workflow("smoke").status === WorkflowStatus.FAILED &&
      ["eu-1", "eu-2", "us-1"].every((n) => workflow(n).status === WorkflowStatus.SUCCEEDED),
    "canary FAILED: smoke failed, its three parallel siblings succeeded",
  );

  const got = (await executions.getExecution({ executionId: first.id }, call)).execution!;
  const point = (name: string) => got.stages.find((s) => s.name === name)!.resumePoint!;
  check(
    point("canary").resumable && !point("rollout").resumable && point("rollout").block === ErrorReason.STAGE_NOT_REACHED,
    "GetExecution: canary is a resume point, rollout is not (STAGE_NOT_REACHED)",
  );

  writeFileSync(marker, ""); // "fix" the smoke test

  const fromCanary = { case: "stageName" as const, value: "canary" };
  const preview = await executions.resume({ executionId: first.id, fromStage: fromCanary, validateOnly: true }, call);
  check(
    preview.execution === undefined &&
      JSON.stringify(preview.plan.map((p) => [p.name, p.action])) ===
        JSON.stringify([["build", PlannedAction.CARRY_OVER], ["canary", PlannedAction.RUN], ["rollout", PlannedAction.RUN]]),
    "Resume validate_only: creates nothing; carries build over, runs canary and rollout",
  );

  const resumed = (await executions.resume(
    { executionId: first.id, fromStage: fromCanary, requestId: randomUUID(), reason: "smoke test fixed" },
    call,
  )).execution!;
  check(resumed.attempt === 2 && resumed.chainId === first.id, "Resume: attempt 2 of the first execution's chain");

  const second = (await watchUntilFinal(resumed.id))!;
  check(second.status === ExecutionStatus.SUCCEEDED, "WatchExecution: the resume SUCCEEDED");
  const build = second.stages.find((s) => s.name === "build")!;
  check(build.carriedOver && build.carriedFromExecutionId === first.id, "build was carried over from the first attempt");
  const rerun = second.stages.find((s) => s.name === "canary")!.workflows;
  check(rerun.length === 4 && rerun.every((w) => w.status === WorkflowStatus.SUCCEEDED), "all four canary workflows ran again and succeeded");

  const history = await executions.listHistory({ executionId: first.id }, call);
  check(
    JSON.stringify(history.entries.map((e) => [e.executionId, e.attempt])) === JSON.stringify([[second.id, 2], [first.id, 1]]) &&
      history.entries[0].resumedFrom?.stageName === "canary",
    "ListHistory: 2 attempts, newest first; the resume came from canary",
  );

  // A refused call: the first execution is no longer the latest of its chain.
  try {
    await executions.resume({ executionId: first.id, fromStage: fromCanary }, call);
    check(false, "Resume of a resumed execution is refused");
  } catch (e) {
    const error = ConnectError.from(e);
    check(error.code === Code.FailedPrecondition, `refused: FAILED_PRECONDITION (${error.rawMessage})`);
    const [info] = error.findDetails(ErrorInfoSchema);
    const [failure] = error.findDetails(PreconditionFailureSchema);
    check(
      info?.domain === "reprise.v1" &&
        info.reason === reasonName(ErrorReason.NOT_LATEST_IN_CHAIN) &&
        info.metadata["latest_execution_id"] === second.id,
      `ErrorInfo: reason ${info?.reason}, latest_execution_id names the resume`,
    );
    check(failure?.violations[0]?.type === info?.reason, "PreconditionFailure: the same reason as its violation type");
    const old = (await executions.getExecution({ executionId: first.id }, call)).execution!;
    check(reasonName(old.stages[1].resumePoint!.block) === info?.reason, "GetExecution's resume point names the same reason");
  }
}

try {
  await scenario();
} catch (e) {
  check(false, `${e instanceof Error ? e.message : String(e)}`);
}
console.log(`typescript-example: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
