package dev.reprise.examples;

import com.google.protobuf.Any;
import com.google.rpc.ErrorInfo;
import com.google.rpc.PreconditionFailure;
import dev.reprise.v1.CreatePipelineRequest;
import dev.reprise.v1.Environment;
import dev.reprise.v1.EnvironmentType;
import dev.reprise.v1.ErrorReason;
import dev.reprise.v1.Execution;
import dev.reprise.v1.ExecutionServiceGrpc;
import dev.reprise.v1.ExecutionStatus;
import dev.reprise.v1.GetExecutionRequest;
import dev.reprise.v1.HistoryEntry;
import dev.reprise.v1.ListHistoryRequest;
import dev.reprise.v1.ListHistoryResponse;
import dev.reprise.v1.Pipeline;
import dev.reprise.v1.PipelineDefinition;
import dev.reprise.v1.PipelineServiceGrpc;
import dev.reprise.v1.PlannedAction;
import dev.reprise.v1.ResumeRequest;
import dev.reprise.v1.ResumeResponse;
import dev.reprise.v1.Stage;
import dev.reprise.v1.StageExecution;
import dev.reprise.v1.StageStatus;
import dev.reprise.v1.StartExecutionRequest;
import dev.reprise.v1.WatchExecutionRequest;
import dev.reprise.v1.Workflow;
import dev.reprise.v1.WorkflowExecution;
import dev.reprise.v1.WorkflowStage;
import dev.reprise.v1.WorkflowStatus;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * The resume scenario through a Java client generated from proto/ with plain protoc and grpc-java
 * (java_package dev.reprise.v1, one class per message).
 *
 * <p>Against a running {@code reprise dev} (server and reference worker in one process, on this
 * machine: the shell tasks below run here), it creates a pipeline build -> canary (four parallel
 * workflows; {@code smoke} fails until a marker file exists) -> rollout, starts it and watches it
 * fail, previews and runs a Resume from canary, watches the resume succeed, lists the chain's
 * history, and decodes the error details of a refused Resume. Prints each check, then {@code N
 * passed, M failed}; exits non-zero on any failure. REPRISE_ADDRESS (default 127.0.0.1:50051)
 * names the server, REPRISE_EXAMPLE_DIR a directory the worker can see.
 */
public final class ResumeScenario {
  private int passed;
  private int failed;

  private void check(boolean ok, String what) {
    if (ok) {
      passed++;
    } else {
      failed++;
    }
    System.out.println((ok ? "ok   " : "FAIL ") + what);
  }

  /** ErrorInfo.reason of an ErrorReason value: its name without the ERROR_REASON_ prefix. */
  static String reasonName(ErrorReason reason) {
    return reason.name().substring("ERROR_REASON_".length());
  }

  private static Stage stage(String name, Environment env, String... nameCommandPairs) {
    WorkflowStage.Builder set = WorkflowStage.newBuilder();
    for (int i = 0; i < nameCommandPairs.length; i += 2) {
      set.addWorkflows(Workflow.newBuilder().setName(nameCommandPairs[i]).setCommand(nameCommandPairs[i + 1]));
    }
    return Stage.newBuilder().setName(name).setEnvironment(env).setWorkflows(set).build();
  }

  /** WatchExecution until the stream ends: the execution reached a final state. */
  private static Execution watchUntilFinal(ExecutionServiceGrpc.ExecutionServiceBlockingStub executions, String id) {
    Execution last = null;
    Iterator<dev.reprise.v1.WatchExecutionResponse> stream =
        executions.withDeadlineAfter(60, TimeUnit.SECONDS)
            .watchExecution(WatchExecutionRequest.newBuilder().setExecutionId(id).build());
    while (stream.hasNext()) {
      last = stream.next().getExecution();
    }
    return last;
  }

  private void scenario(String address, Path workdir) throws Exception {
    ManagedChannel channel = ManagedChannelBuilder.forTarget(address).usePlaintext().build();
    try {
      PipelineServiceGrpc.PipelineServiceBlockingStub pipelines =
          PipelineServiceGrpc.newBlockingStub(channel).withDeadlineAfter(60, TimeUnit.SECONDS);
      ExecutionServiceGrpc.ExecutionServiceBlockingStub executions =
          ExecutionServiceGrpc.newBlockingStub(channel);

      Path marker = workdir.resolve("java-fixed");
      Environment staging =
          Environment.newBuilder().setName("staging").setType(EnvironmentType.ENVIRONMENT_TYPE_NON_PROD).build();
      Environment prod = Environment.newBuilder().setName("prod").setType(EnvironmentType.ENVIRONMENT_TYPE_PROD).build();
      PipelineDefinition definition =
          PipelineDefinition.newBuilder()
              .setDescription("resume scenario (Java example)")
              .addStages(stage("build", staging, "compile", "echo compiled"))
              .addStages(stage("canary", prod, "eu-1", "echo eu-1", "eu-2", "echo eu-2", "us-1", "echo us-1",
                  "smoke", "test -f '" + marker + "'"))
              .addStages(stage("rollout", prod, "all", "echo deployed $REPRISE_ARTIFACT_WEB"))
              .build();
      Pipeline pipeline =
          pipelines.createPipeline(CreatePipelineRequest.newBuilder().setApplication("shop")
                  .setName("resume-java-" + UUID.randomUUID().toString().substring(0, 8))
                  .setDefinition(definition).build())
              .getPipeline();
      check(pipeline.getVersion() == 1 && pipeline.getDefinition().getStagesCount() == 3,
          "CreatePipeline: version 1 with 3 stages");

      ExecutionServiceGrpc.ExecutionServiceBlockingStub call = executions.withDeadlineAfter(60, TimeUnit.SECONDS);
      Execution started = call.startExecution(StartExecutionRequest.newBuilder().setPipelineId(pipeline.getId())
              .putArtifacts("web", "1.2.3").setRequestId(UUID.randomUUID().toString()).build())
          .getExecution();
      Execution first = watchUntilFinal(executions, started.getId());
      check(first.getStatus() == ExecutionStatus.EXECUTION_STATUS_FAILED, "WatchExecution: the first attempt FAILED");
      StageExecution canary = first.getStages(1);
      boolean siblingsOk = true;
      for (WorkflowExecution w : canary.getWorkflowsList()) {
        if (!w.getName().equals("smoke") && w.getStatus() != WorkflowStatus.WORKFLOW_STATUS_SUCCEEDED) {
          siblingsOk = false;
        }
      }
      check(canary.getStatus() == StageStatus.STAGE_STATUS_FAILED && siblingsOk,
          "canary FAILED: smoke failed, its three parallel siblings succeeded");

      Execution got = call.getExecution(GetExecutionRequest.newBuilder().setExecutionId(first.getId()).build())
          .getExecution();
      check(got.getStages(1).getResumePoint().getResumable() && !got.getStages(2).getResumePoint().getResumable()
              && got.getStages(2).getResumePoint().getBlock() == ErrorReason.ERROR_REASON_STAGE_NOT_REACHED,
          "GetExecution: canary is a resume point, rollout is not (STAGE_NOT_REACHED)");

      Files.write(marker, new byte[0]); // "fix" the smoke test

      ResumeResponse preview = call.resume(ResumeRequest.newBuilder().setExecutionId(first.getId())
          .setStageName("canary").setValidateOnly(true).build());
      check(!preview.hasExecution() && preview.getPlanCount() == 3
              && preview.getPlan(0).getAction() == PlannedAction.PLANNED_ACTION_CARRY_OVER
              && preview.getPlan(1).getAction() == PlannedAction.PLANNED_ACTION_RUN
              && preview.getPlan(2).getAction() == PlannedAction.PLANNED_ACTION_RUN,
          "Resume validate_only: creates nothing; carries build over, runs canary and rollout");

      Execution resumed = call.resume(ResumeRequest.newBuilder().setExecutionId(first.getId()).setStageName("canary")
              .setRequestId(UUID.randomUUID().toString()).setReason("smoke test fixed").build())
          .getExecution();
      check(resumed.getAttempt() == 2 && resumed.getChainId().equals(first.getId()),
          "Resume: attempt 2 of the first execution's chain");

      Execution second = watchUntilFinal(executions, resumed.getId());
      check(second.getStatus() == ExecutionStatus.EXECUTION_STATUS_SUCCEEDED, "WatchExecution: the resume SUCCEEDED");
      check(second.getStages(0).getCarriedOver()
              && second.getStages(0).getCarriedFromExecutionId().equals(first.getId()),
          "build was carried over from the first attempt");
      boolean rerunOk = second.getStages(1).getWorkflowsCount() == 4;
      for (WorkflowExecution w : second.getStages(1).getWorkflowsList()) {
        rerunOk &= w.getStatus() == WorkflowStatus.WORKFLOW_STATUS_SUCCEEDED;
      }
      check(rerunOk, "all four canary workflows ran again and succeeded");

      ListHistoryResponse history =
          call.listHistory(ListHistoryRequest.newBuilder().setExecutionId(first.getId()).build());
      HistoryEntry newest = history.getEntriesCount() == 2 ? history.getEntries(0) : HistoryEntry.getDefaultInstance();
      check(history.getEntriesCount() == 2 && newest.getExecutionId().equals(second.getId()) && newest.getAttempt() == 2
              && history.getEntries(1).getExecutionId().equals(first.getId())
              && newest.getResumedFrom().getStageName().equals("canary"),
          "ListHistory: 2 attempts, newest first; the resume came from canary");

      // A refused call: the first execution is no longer the latest of its chain.
      try {
        call.resume(ResumeRequest.newBuilder().setExecutionId(first.getId()).setStageName("canary").build());
        check(false, "Resume of a resumed execution is refused");
      } catch (StatusRuntimeException e) {
        check(e.getStatus().getCode() == Status.Code.FAILED_PRECONDITION,
            "refused: FAILED_PRECONDITION (" + e.getStatus().getDescription() + ")");
        ErrorInfo info = null;
        PreconditionFailure failure = null;
        com.google.rpc.Status details = StatusProto.fromThrowable(e);
        for (Any any : details == null ? java.util.List.<Any>of() : details.getDetailsList()) {
          if (any.is(ErrorInfo.class)) {
            info = any.unpack(ErrorInfo.class);
          } else if (any.is(PreconditionFailure.class)) {
            failure = any.unpack(PreconditionFailure.class);
          }
        }
        String reason = info == null ? null : info.getReason();
        check(info != null && info.getDomain().equals("reprise.v1")
                && reason.equals(reasonName(ErrorReason.ERROR_REASON_NOT_LATEST_IN_CHAIN))
                && second.getId().equals(info.getMetadataMap().get("latest_execution_id")),
            "ErrorInfo: reason " + reason + ", latest_execution_id names the resume");
        check(failure != null && failure.getViolationsCount() > 0 && failure.getViolations(0).getType().equals(reason),
            "PreconditionFailure: the same reason as its violation type");
        Execution old = call.getExecution(GetExecutionRequest.newBuilder().setExecutionId(first.getId()).build())
            .getExecution();
        check(reasonName(old.getStages(1).getResumePoint().getBlock()).equals(reason),
            "GetExecution's resume point names the same reason");
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  public static void main(String[] args) throws Exception {
    String address = System.getenv().getOrDefault("REPRISE_ADDRESS", "127.0.0.1:50051");
    String dir = System.getenv("REPRISE_EXAMPLE_DIR");
    Path workdir = dir == null ? Files.createTempDirectory("reprise-java-") : Path.of(dir);
    ResumeScenario run = new ResumeScenario();
    try {
      run.scenario(address, workdir);
    } catch (Exception e) { // a gRPC error or a crash is a failure too, with its reason
      run.check(false, e.toString());
    }
    System.out.println("java-example: " + run.passed + " passed, " + run.failed + " failed");
    System.exit(run.failed == 0 ? 0 : 1);
  }
}
